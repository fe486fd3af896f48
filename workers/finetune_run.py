"""The fine-tune cell run: TrainConfig from the cell, progress into the Job, resumable.

A task delivered twice, or sent again after its worker died, finds the checkpoints of
the first attempt in the job's output folder and resumes from the latest; it never
starts over.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.utils import timezone

from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.jobs.models import EventLevel, Job, JobStatus
from webapp.jobs.services import job_event_add, job_fail, job_progress, job_succeed
from webapp.projects.artifacts import manifest_trained_tokens, run_output_dir
from webapp.projects.finetune_config import keeps_transferable, train_config_dict
from webapp.projects.models import Cell, CellRun, RunStatus
from webapp.transfers.services import transferable_after_finetune
from workers import services_bridge

log = logging.getLogger(__name__)

WRITE_EVERY_S = 1.0
STOP_CHECK_EVERY_S = 1.0
METRIC_KEYS = (
    "train_loss",
    "val_loss",
    "learning_rate",
    "tokens_per_s",
    "eta_s",
    "peak_memory_bytes",
    "epoch",
)
MAX_HISTORY = 500


class UserError(Exception):
    """A problem the user can fix; its message is shown as is."""


def dataset_file(inputs: dict[str, Any], key: str = "dataset_cell") -> tuple[DatasetVersion, str]:
    """The dataset cell's pinned version, or its dataset's latest valid one."""
    cell = Cell.objects.filter(pk=inputs.get(key), kind="dataset").first()
    if cell is None:
        raise UserError("The dataset cell this fine-tune uses no longer exists.")
    versions = DatasetVersion.objects.filter(dataset_id=cell.config.get("dataset"))
    pinned = cell.config.get("version")
    if pinned:
        version = versions.filter(version=pinned).first()
        if version is None or version.status != VersionStatus.VALID:
            raise UserError(f"Dataset version v{pinned} is missing or did not pass validation.")
    else:
        version = versions.filter(status=VersionStatus.VALID).order_by("-version").first()
        if version is None:
            raise UserError("The dataset has no valid version yet; upload one and let it validate.")
    return version, version.file.path


class Progress:
    """The train() callback: Job progress and JobEvents, DB writes throttled."""

    def __init__(self, run: CellRun, job_id: int) -> None:
        self.run_id, self.job_id = run.pk, job_id
        self.outputs: dict[str, Any] = dict(run.outputs or {})
        self.outputs.setdefault("checkpoints", [])
        self.metrics: dict[str, Any] = {}
        self.last_write = 0.0

    def save_outputs(self) -> None:
        CellRun.objects.filter(pk=self.run_id).update(outputs=self.outputs)

    def __call__(self, event: dict[str, Any]) -> None:
        kind, step, total = event["kind"], event["step"], event["total_steps"]
        self.metrics.update({k: event[k] for k in METRIC_KEYS if k in event})
        self.metrics.update(step=step, total_steps=total)
        now = time.monotonic()
        if kind == "step" and now - self.last_write < WRITE_EVERY_S and step < total:
            return
        self.last_write = now
        job_progress(
            job_id=self.job_id,
            current=step,
            total=total,
            message=event.get("message") or f"step {step} of {total}",
            metrics=dict(self.metrics),
        )
        job = Job(pk=self.job_id)
        data = {"kind": kind, **{k: v for k, v in event.items() if k != "message"}}
        if kind == "step":
            job_event_add(job=job, level=EventLevel.DEBUG, message=f"step {step}", data=data)
            return
        if kind == "checkpoint":
            point = {"step": step, **{k: self.metrics.get(k) for k in ("train_loss", "val_loss")}}
            kept = [c for c in self.outputs["checkpoints"] if c["step"] != step]
            self.outputs["checkpoints"] = sorted([*kept, point], key=lambda c: c["step"])
            self.save_outputs()
        job_event_add(job=job, message=event.get("message") or kind, data=data)


class StopCheck:
    """should_stop: the job was cancelled, or another delivery of the task took it over."""

    def __init__(self, job_id: int, task_id: str) -> None:
        self.job_id, self.task_id = job_id, task_id
        self.last_check, self.stop = 0.0, False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.stop and now - self.last_check >= STOP_CHECK_EVERY_S:
            self.last_check = now
            row = Job.objects.filter(pk=self.job_id).values_list("status", "celery_task_id")
            status, owner = row.first() or (JobStatus.CANCELLED, "")
            self.stop = status != JobStatus.RUNNING or bool(owner and owner != self.task_id)
        return self.stop


def _downsample(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(history) <= MAX_HISTORY:
        return history
    stride = len(history) / MAX_HISTORY
    keep = {int(i * stride) for i in range(MAX_HISTORY)} | {len(history) - 1}
    return [h for i, h in enumerate(history) if i in keep or "val_loss" in h]


def run_finetune(run: CellRun, job_id: int, task_id: str) -> None:
    """Train the run's adapter; settles the CellRun and the Job whatever happens."""
    output_dir = run_output_dir(job_id)
    progress = Progress(run, job_id)
    try:
        version, path = dataset_file(run.inputs)
        val_path = None
        if run.inputs.get("val_dataset_cell"):
            val_path = dataset_file(run.inputs, "val_dataset_cell")[1]
        config = train_config_dict(
            run.inputs, data_path=path, output_dir=output_dir, val_path=val_path
        )
        done_steps = services_bridge.checkpoint_steps(output_dir)
        if done_steps:
            job_event_add(
                job=Job(pk=job_id),
                message=f"Resuming from the checkpoint at step {done_steps[-1]}",
                data={"kind": "resume", "step": done_steps[-1]},
            )
        progress.outputs.update(
            output_dir=str(output_dir),
            dataset_version=version.pk,
            dataset_label=str(version),  # lineage keeps the name if the dataset is deleted
            config=config,
        )
        progress.save_outputs()
        result = services_bridge.train(
            config,
            on_event=progress,
            should_stop=StopCheck(job_id, task_id),
            resume=bool(done_steps),
        )
    except UserError as exc:
        _settle_failed(run, job_id, progress, str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - every failure must land on the job
        if not services_bridge.is_user_error(exc):
            log.exception("fine-tune run %s failed", run.pk)
        message = str(exc) if services_bridge.is_user_error(exc) else f"{type(exc).__name__}: {exc}"
        _settle_failed(run, job_id, progress, message)
        return
    outputs = progress.outputs
    outputs.update({k: v for k, v in result.items() if k not in ("history", "status")})
    outputs["history"] = _downsample(result["history"])
    if result["status"] == "cancelled":
        status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        if status == JobStatus.CANCELLED:
            _settle(run, RunStatus.CANCELLED, outputs)
        else:  # superseded by a newer delivery: that one settles the run
            CellRun.objects.filter(pk=run.pk).update(outputs=outputs)
        return
    outputs.update(adapter_dir=str(output_dir / "adapter"), final=config["final"])
    # Stored once here so job lists never open the manifest for it (the /v1/ API shows it).
    outputs["trained_tokens"] = manifest_trained_tokens(output_dir)
    _settle(run, RunStatus.SUCCEEDED, outputs)
    summary = {k: result[k] for k in ("steps", "train_loss", "best_val_loss", "best_step")}
    job_succeed(job_id=job_id, result={**summary, "adapter_dir": outputs["adapter_dir"]})
    if keeps_transferable(run.inputs):  # Trans-LoRA seeds + discriminator, a job of its own
        transferable_after_finetune(run_id=run.pk)


def _settle(run: CellRun, status: str, outputs: dict[str, Any]) -> None:
    CellRun.objects.filter(pk=run.pk).update(
        status=status, outputs=outputs, finished_at=timezone.now()
    )


def _settle_failed(run: CellRun, job_id: int, progress: Progress, message: str) -> None:
    _settle(run, RunStatus.FAILED, {**progress.outputs, "error": message})
    job_fail(job_id=job_id, error=message)
