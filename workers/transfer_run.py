"""The transfer cell run: Trans-LoRA moves a fine-tune cell's adapter to a new base model.

Each phase (generate, filter, teacher answers, train student, evaluate) reports live
progress into the run's outputs["phases"] and the Job; a cancel stops between batches
and keeps what was done (synthetic inputs so far, accuracies so far) in the outputs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from django.utils import timezone

from webapp.jobs.models import Job, JobStatus
from webapp.jobs.services import job_fail, job_progress, job_succeed
from webapp.projects.artifacts import run_output_dir
from webapp.projects.models import CellRun, RunStatus
from webapp.transfers.kind import TransferForm
from webapp.transfers.selectors import adapter_lineage, latest_succeeded_run, transferable_files
from workers import transfer_keep  # noqa: F401 - registers the make_transferable task
from workers.finetune_run import StopCheck, UserError, dataset_file

log = logging.getLogger(__name__)

PHASES = (
    ("generate", "Generate synthetic inputs"),
    ("filter", "Filter (discriminator)"),
    ("teacher", "Teacher answers"),
    ("train", "Train student"),
    ("evaluate", "Evaluate"),
)
# Sampling and filtering run as one loop: its events move both rows.
SHOWN_AS = {"generate": ("generate", "filter")}
WRITE_EVERY_S = 1.0
DEFAULTS = {k: f.initial for k, f in TransferForm.base_fields.items() if f.initial is not None}


def setting(inputs: dict[str, Any], key: str) -> Any:
    """The cell's value, or the form's default when left blank."""
    value = inputs.get(key)
    return DEFAULTS.get(key) if value is None or value == "" else value


def optional_int(inputs: dict[str, Any], key: str) -> int | None:
    """The cell's whole number, or None when left blank (the library then decides)."""
    value = inputs.get(key)
    return None if value is None or value == "" else int(value)


class PhaseProgress:
    """Hooks.progress: per-phase counters and seconds in outputs["phases"], DB writes throttled."""

    def __init__(self, run_id: int, job_id: int, outputs: dict[str, Any], filtered: bool) -> None:
        self.run_id, self.job_id, self.outputs = run_id, job_id, outputs
        self.phases: dict[str, dict[str, Any]] = {
            key: {"label": label, "status": "pending", "current": 0, "total": None, "seconds": 0.0}
            for key, label in PHASES
        }
        if not filtered:
            self.phases["filter"].update(status="skipped", detail="unfiltered: no discriminator")
        outputs["phases"] = self.phases
        self.current, self.last_write, self.last_tick = "", 0.0, time.monotonic()

    def _set(self, key: str, current: int, total: int | None, detail: str) -> None:
        phase = self.phases[key]
        if phase["status"] != "skipped":
            phase.update(current=current, total=total, detail=detail, status="running")

    def __call__(self, phase: str, current: int, total: int | None, info: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.current:  # time since the last event belongs to the phase that was running
            self.phases[self.current]["seconds"] = round(
                self.phases[self.current]["seconds"] + now - self.last_tick, 1
            )
        self.last_tick = now
        changed = phase != self.current
        if changed and self.current:
            for key in SHOWN_AS.get(self.current, (self.current,)):
                if self.phases[key]["status"] == "running":
                    self.phases[key]["status"] = "done"
        self.current = phase
        if phase == "generate":
            accepted, wanted = info.get("accepted", 0), info.get("wanted")
            which = " (unfiltered ablation)" if info.get("key") == "synthesis_unfiltered" else ""
            self._set("generate", current, total, f"{current} candidates sampled{which}")
            rate = accepted / current if current else 0.0
            self._set("filter", accepted, wanted, f"{accepted} accepted · rate {rate:.0%}{which}")
        elif phase == "teacher":
            self._set("teacher", current, total, f"{current} of {total} inputs answered")
        elif phase == "train":
            loss = info.get("train_loss")
            loss_text = f" · loss {loss:.4f}" if loss is not None else ""
            self._set("train", current, total, f"{info.get('student')}{loss_text}")
        elif phase == "evaluate":
            self._set("evaluate", current, total, f"{info.get('model')}: {current} of {total}")
        if not changed and now - self.last_write < WRITE_EVERY_S and current != total:
            return
        self.flush()
        job_progress(
            job_id=self.job_id,
            current=current,
            total=total,
            message=f"{self.phases[phase]['label']}: {self.phases[phase].get('detail', '')}",
        )

    def flush(self) -> None:
        self.last_write = time.monotonic()
        CellRun.objects.filter(pk=self.run_id).update(outputs=self.outputs)

    def close(self, status: str) -> None:
        """The run ended: phases still running are marked done, cancelled or failed."""
        for phase in self.phases.values():
            if phase["status"] == "running":
                phase["status"] = status


def _source(inputs: dict[str, Any]) -> tuple[CellRun, str]:
    """The source fine-tune run and the adapter folder to move (final or a checkpoint)."""
    source = latest_succeeded_run(cell_id=inputs.get("source_cell"))
    if source is None or not source.outputs.get("output_dir"):
        raise UserError("The source fine-tune cell has no finished run yet; run it first.")
    files = transferable_files(run=source)
    if not files["seeds"] or (not files["discriminator"] and not inputs.get("unfiltered")):
        missing = "seeds" if not files["seeds"] else "discriminator"
        raise UserError(
            f"The source adapter ({source.cell} v{source.version}) is not transferable: it has "
            f"no {missing}. Train them from its run page while its dataset exists, or turn "
            "on 'Keep transferable' and run the fine-tune again."
        )
    step = inputs.get("source_checkpoint")
    if not step:
        return source, source.outputs.get("adapter_dir") or ""
    from finetune_core.train.checkpoint import checkpoint_dir

    folder = checkpoint_dir(Path(source.outputs["output_dir"]), int(step))
    if not (folder / "adapter_config.json").is_file():
        steps = ", ".join(str(c["step"]) for c in source.outputs.get("checkpoints", []))
        raise UserError(f"The source run has no checkpoint at step {step} (it has: {steps}).")
    return source, str(folder)


def _eval_data(inputs: dict[str, Any], source: CellRun) -> str | None:
    """The evaluation cell's file, else None: the source's own validation split."""
    if inputs.get("eval_cell"):
        return dataset_file({"dataset_cell": inputs["eval_cell"]})[1]
    data = (source.outputs.get("config") or {}).get("data")
    if not data or not Path(data).is_file():
        raise UserError(
            "The source adapter's dataset is gone, so there is no held-out split to evaluate "
            "on: pick an evaluation dataset cell."
        )
    return None


def transfer_config(inputs: dict[str, Any], source: CellRun, adapter: str, out: Path) -> Any:
    from finetune_core.transfer import TransferConfig
    from finetune_core.transfer.student import parse_target_modules

    ablations = tuple(a for a in ("unfiltered", "seeds_only") if inputs.get(f"ablation_{a}"))
    return TransferConfig(
        run=source.outputs["output_dir"],
        adapter=adapter,
        target=inputs["base_model"],
        output_dir=str(out),
        n_synthetic=int(setting(inputs, "n_synthetic")),
        max_attempts=inputs.get("max_attempts") or None,
        filtered=not inputs.get("unfiltered"),
        real_recall=inputs.get("real_recall") or None,
        teacher_keep=inputs.get("teacher_keep") or 1.0,
        ablations=tuple(
            a for a in ablations if not (a == "unfiltered" and inputs.get("unfiltered"))
        ),
        temperature=float(setting(inputs, "temperature")),
        # None: twice the longest seed's, in the target's tokens.
        sample_max_new_tokens=optional_int(inputs, "sample_max_new_tokens"),
        teacher_max_new_tokens=int(setting(inputs, "teacher_max_new_tokens")),
        distillation=setting(inputs, "distillation"),
        epochs=int(setting(inputs, "epochs")),
        max_steps=inputs.get("max_steps") or None,
        learning_rate=float(setting(inputs, "learning_rate")),
        lora_r=optional_int(inputs, "lora_r"),  # None: the source's
        target_modules=parse_target_modules(setting(inputs, "target_modules")),
        batch_size=int(setting(inputs, "batch_size")),
        quantization=setting(inputs, "quantization"),
        eval_data=_eval_data(inputs, source),
        eval_limit=int(setting(inputs, "eval_limit")),
        eval_max_new_tokens=int(setting(inputs, "eval_max_new_tokens")),
        seed=int(setting(inputs, "seed")),
    )


def run_transfer(run: CellRun, job_id: int, task_id: str) -> None:
    """Move the adapter; settles the CellRun and the Job whatever happens."""
    from finetune_core.errors import FinetuneError
    from finetune_core.transfer import Hooks, TransferStopped, transfer

    out = run_output_dir(job_id)
    outputs: dict[str, Any] = {"output_dir": str(out)}
    progress = PhaseProgress(run.pk, job_id, outputs, filtered=not run.inputs.get("unfiltered"))
    try:
        source, adapter = _source(run.inputs)
        outputs["source"] = {
            "run": source.pk,
            "cell": str(source.cell),
            "version": source.version,
            "base_model": source.inputs.get("base_model"),
            "checkpoint": run.inputs.get("source_checkpoint"),
            "adapter": adapter,
            "lineage": adapter_lineage(run=source),
        }
        progress.flush()
        cfg = transfer_config(run.inputs, source, adapter, out)
        # A resumed job (cancel then Resume, or a worker restart) reuses its folder's phases.
        report = transfer(
            cfg,
            hooks=Hooks(progress=progress, should_stop=StopCheck(job_id, task_id)),
            resume=True,
        )
    except TransferStopped as stopped:
        outputs["partial"] = stopped.partial
        progress.close("cancelled")
        progress.flush()
        status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        if status == JobStatus.CANCELLED:
            _settle(run, RunStatus.CANCELLED, outputs)
        return
    except (UserError, FinetuneError) as exc:
        progress.close("failed")
        _settle_failed(run, job_id, outputs, str(exc))
        return
    except Exception as exc:  # noqa: BLE001 - every failure must land on the job
        log.exception("transfer run %s failed", run.pk)
        progress.close("failed")
        _settle_failed(run, job_id, outputs, f"{type(exc).__name__}: {exc}")
        return
    progress.close("done")
    outputs.update(report=report, adapter_dir=report["adapter"])
    _settle(run, RunStatus.SUCCEEDED, outputs)
    accuracy = {k: v.get("accuracy") for k, v in report["accuracy"].items()}
    job_succeed(job_id=job_id, result={"adapter_dir": report["adapter"], "accuracy": accuracy})


def _settle(run: CellRun, status: str, outputs: dict[str, Any]) -> None:
    CellRun.objects.filter(pk=run.pk).update(
        status=status, outputs=outputs, finished_at=timezone.now()
    )


def _settle_failed(run: CellRun, job_id: int, outputs: dict[str, Any], message: str) -> None:
    _settle(run, RunStatus.FAILED, {**outputs, "error": message})
    job_fail(job_id=job_id, error=message)
