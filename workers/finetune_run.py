"""The fine-tune cell run: TrainConfig from the cell, progress into the Job, resumable.

A task delivered twice, or sent again after its worker died, finds the checkpoints of
the first attempt in the job's output folder and resumes from the latest; it never
starts over.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from finetune_core.contracts.layout import ADAPTER, read_manifest
from finetune_core.contracts.train import PREFERENCE_METRICS
from webapp.core import storage
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.jobs.models import EventLevel, Job
from webapp.jobs.services import job_event_add
from webapp.projects.artifacts import run_key
from webapp.projects.finetune_config import keeps_transferable, train_config_dict
from webapp.projects.models import Cell, CellRun, RunStatus
from webapp.projects.run_lifecycle import cell_run_fail, cell_run_settle
from webapp.projects.run_outputs import outputs_of
from webapp.transfers.selectors import latest_succeeded_run
from webapp.transfers.services import transferable_after_finetune
from workers import between_steps, services_bridge
from workers.db_retry import db_retrying
from workers.reporter import Line, Reporter
from workers.reporter import event as event_of
from workers.workspace import RunSpace, fetch_upload, local_copy, open_run_space

log = logging.getLogger(__name__)

METRIC_KEYS = (
    "train_loss",
    "val_loss",
    "learning_rate",
    "tokens_per_s",
    "eta_s",
    "peak_memory_bytes",
    "epoch",
    "gradient_checkpointing",  # 1.0 or 0.0, from the start event: the peak's meaning
    # DPO and SimPO: rewards, margins and accuracy, per step and (val_) per evaluation
    *PREFERENCE_METRICS,
    *(f"val_{key}" for key in PREFERENCE_METRICS),
)
MAX_HISTORY = 500
# The run's outcome must land even when the database restarted while it trained.
settle, fail = db_retrying(cell_run_settle), db_retrying(cell_run_fail)


class UserError(Exception):
    """A problem the user can fix; its message is shown as is."""


def dataset_version(inputs: dict[str, Any], key: str = "dataset_cell") -> DatasetVersion:
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
    return version


def dataset_file(inputs: dict[str, Any], key: str = "dataset_cell") -> tuple[DatasetVersion, str]:
    """The dataset version and its file on this host."""
    version = dataset_version(inputs, key)
    return version, str(fetch_upload(version.file.name))


def train_reporter(run: CellRun, job_id: int, task_id: str, space: RunSpace) -> Reporter:
    """Training's events (progress info: the engine's ProgressEvent dict) as the job's bar,
    its metrics and an event each (steps at debug level); a checkpoint is published (on
    object storage, resumable from any host) and offered in the run's outputs."""
    outputs: dict[str, Any] = dict(run.outputs or {})
    outputs.setdefault("checkpoints", [])
    # The device goes with the metrics: the measured figures are kept per device.
    metrics: dict[str, Any] = {"device": services_bridge.device_kind()}

    def line(phase: str, step: int, total: int | None, event: dict[str, Any]) -> Line:
        kind = event["kind"]
        metrics.update({k: event[k] for k in METRIC_KEYS if k in event})
        metrics.update(step=step, total_steps=total)
        data = {"kind": kind, **{k: v for k, v in event.items() if k != "message"}}
        said = event.get("message") or ""
        if kind == "checkpoint":
            space.publish_checkpoint(step)
            point = {"step": step, **{k: metrics.get(k) for k in ("train_loss", "val_loss")}}
            kept = [c for c in outputs["checkpoints"] if c["step"] != step]
            points = sorted([*kept, point], key=lambda c: c["step"])
            # The engine deleted all but the newest keep_checkpoints: offer only those.
            keep = int(run.inputs.get("keep_checkpoints") or 0)
            outputs["checkpoints"] = points[-keep:] if keep else points
        return Line(
            step,
            total,
            said or f"step {step} of {total}",
            metrics=dict(metrics),
            events=[
                event_of(f"step {step}", data, EventLevel.DEBUG)
                if kind == "step"
                else event_of(said or kind, data)
            ],
            force=kind != "step",
            save=kind == "checkpoint",
        )

    between = between_steps.for_worker(task_id)
    return Reporter(job_id, task_id, line=line, run=run, outputs=outputs, between=between)


def _downsample(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(history) <= MAX_HISTORY:
        return history
    stride = len(history) / MAX_HISTORY
    keep = {int(i * stride) for i in range(MAX_HISTORY)} | {len(history) - 1}
    return [h for i, h in enumerate(history) if i in keep or "val_loss" in h]


def failure_message(run: CellRun, exc: Exception) -> str:
    """What the run's page says: the engine's own message for a problem people can fix (a
    full disk names this worker, since the disk is its), else the error's type and text."""
    if services_bridge.disk_full(exc):  # the engine's DiskFull, or a write outside it
        log.warning("fine-tune run %s: disk full: %s", run.pk, exc)
        if services_bridge.is_user_error(exc):
            return f"Worker {socket.gethostname()}: {exc}"
        return (
            f"Worker {socket.gethostname()}: its disk is full ({exc}). Free space on it, "
            "then resume the run: it continues from its last complete checkpoint."
        )
    if services_bridge.is_user_error(exc):
        return str(exc)
    log.exception("fine-tune run %s failed", run.pk)
    return f"{type(exc).__name__}: {exc}"


def run_finetune(run: CellRun, job_id: int, task_id: str) -> None:
    """Train the run's adapter; settles the CellRun and the Job whatever happens."""
    space = open_run_space(run_key(job_id))
    try:
        _train_in(space, run, job_id, task_id)
    finally:
        space.close()


def _configs(space: RunSpace, inputs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The TrainConfig for the engine (this host's paths) and the one the run records
    (storage keys: the same on every host)."""
    files = {"dataset_cell": dataset_version(inputs)}
    if inputs.get("val_dataset_cell"):
        files["val_dataset_cell"] = dataset_version(inputs, "val_dataset_cell")
    keys = {name: version.file.name for name, version in files.items()}
    local = {name: str(fetch_upload(key)) for name, key in keys.items()}
    config, recorded = (
        train_config_dict(
            inputs,
            data_path=paths["dataset_cell"],
            output_dir=folder,
            val_path=paths.get("val_dataset_cell"),
        )
        for paths, folder in ((local, space.folder), (keys, space.key))
    )
    start = start_adapter(inputs)
    if start:  # DPO (or more training) on an earlier cell's adapter
        config["init_adapter"], recorded["init_adapter"] = str(local_copy(start)), start
    return config, recorded


def start_adapter(inputs: dict[str, Any]) -> str | None:
    """The storage key of the adapter the cell starts from (`init_cell`: its latest
    finished run's), or None for a new adapter."""
    if not inputs.get("init_cell"):
        return None
    source = latest_succeeded_run(cell_id=inputs["init_cell"])
    adapter = outputs_of(source, "finetune").adapter_dir if source else None
    if not adapter:
        raise UserError(
            "The fine-tune cell this one starts from has no finished run; run it first."
        )
    return adapter


def _train_in(space: RunSpace, run: CellRun, job_id: int, task_id: str) -> None:
    progress = train_reporter(run, job_id, task_id, space)
    try:
        version = dataset_version(run.inputs)
        config, recorded = _configs(space, run.inputs)
        done_steps = services_bridge.checkpoint_steps(space.folder)
        if done_steps:
            job_event_add(
                job=Job(pk=job_id),
                message=f"Resuming from the checkpoint at step {done_steps[-1]}",
                data={"kind": "resume", "step": done_steps[-1]},
            )
        progress.outputs.update(
            output_dir=space.key,
            dataset_version=version.pk,
            dataset_label=str(version),  # lineage keeps the name if the dataset is deleted
            config=recorded,
        )
        progress.save()
        try:
            result = services_bridge.train(config, hooks=progress.hooks(), resume=bool(done_steps))
        finally:
            between_steps.finished(progress.between)
    except UserError as exc:
        fail(run=run, error=str(exc), outputs=progress.outputs)
        return
    except Exception as exc:  # noqa: BLE001 - every failure must land on the job
        fail(run=run, error=failure_message(run, exc), outputs=progress.outputs)
        return
    outputs = progress.outputs
    skip = ("history", "status", "output_dir")  # the engine's folder is this host's path
    outputs.update({k: v for k, v in result.items() if k not in skip})
    outputs["history"] = _downsample(result["history"])
    if result["status"] == "cancelled":  # settled only if the job was cancelled, not taken over
        settle(run=run, outcome=RunStatus.CANCELLED, outputs=outputs)
        return
    space.publish()
    outputs.update(adapter_dir=storage.join(space.key, ADAPTER), final=config["final"])
    # Stored once here so job lists never open the manifest for it (the /v1/ API shows it).
    manifest = read_manifest(space.folder)
    outputs["trained_tokens"] = manifest.trained_tokens if manifest else None
    summary = {k: result[k] for k in ("steps", "train_loss", "best_val_loss", "best_step")}
    settle(
        run=run,
        outcome=RunStatus.SUCCEEDED,
        outputs=outputs,
        result={**summary, "adapter_dir": outputs["adapter_dir"]},
    )
    if keeps_transferable(run.inputs):  # Trans-LoRA seeds + discriminator, a job of its own
        transferable_after_finetune(run_id=run.pk)
