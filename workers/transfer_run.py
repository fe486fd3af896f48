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

from finetune_core.contracts.layout import TRAINER_STATE, checkpoint_dir
from webapp.core import storage
from webapp.projects.artifacts import run_key
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.run_lifecycle import cell_run_fail, cell_run_settle
from webapp.projects.run_outputs import outputs_of
from webapp.projects.setting_fields import blank
from webapp.transfers.selectors import adapter_lineage, latest_succeeded_run, transferable_files
from workers.finetune_run import UserError, dataset_file
from workers.reporter import Line, Reporter
from workers.workspace import RunSpace, local_copy, localize_run_config, open_run_space

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


class Phases:
    """Per-phase counters and seconds in outputs["phases"], from the engine's progress."""

    def __init__(self, outputs: dict[str, Any], filtered: bool) -> None:
        self.phases: dict[str, dict[str, Any]] = {
            key: {"label": label, "status": "pending", "current": 0, "total": None, "seconds": 0.0}
            for key, label in PHASES
        }
        if not filtered:
            self.phases["filter"].update(status="skipped", detail="unfiltered: no discriminator")
        outputs["phases"] = self.phases
        self.current, self.last_tick = "", time.monotonic()

    def _set(self, key: str, current: int, total: int | None, detail: str) -> None:
        phase = self.phases[key]
        if phase["status"] != "skipped":
            phase.update(current=current, total=total, detail=detail, status="running")

    def update(self, phase: str, current: int, total: int | None, info: dict[str, Any]) -> Line:
        """Hooks.progress: the phase's row, and the job's bar (with the outputs)."""
        now = time.monotonic()
        if self.current:  # time since the last event belongs to the phase that was running
            self.phases[self.current]["seconds"] = round(
                self.phases[self.current]["seconds"] + now - self.last_tick, 1
            )
        self.last_tick = now
        if phase != self.current and self.current:
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
        shown = self.phases[phase]
        message = f"{shown['label']}: {shown.get('detail', '')}"
        return Line(current, total, message, key=phase, save=True)

    def close(self, status: str) -> None:
        """The run ended: phases still running are marked done, cancelled or failed."""
        for phase in self.phases.values():
            if phase["status"] == "running":
                phase["status"] = status


def _source(inputs: dict[str, Any]) -> tuple[CellRun, str]:
    """The source fine-tune run and the adapter folder to move (final or a checkpoint)."""
    source = latest_succeeded_run(cell_id=inputs.get("source_cell"))
    done = outputs_of(source) if source is not None else None
    if done is None or not done.output_dir:
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
        return source, done.adapter_dir or ""
    folder = checkpoint_dir(done.output_dir, int(step)).as_posix()
    if not storage.exists(storage.join(folder, TRAINER_STATE)):
        steps = ", ".join(str(c["step"]) for c in done.checkpoints)
        raise UserError(f"The source run has no checkpoint at step {step} (it has: {steps}).")
    return source, folder


def source_run_copy(source: CellRun) -> Path:
    """The source run's folder on this host (fetched, where storage is not local)."""
    done = outputs_of(source)
    folder = local_copy(done.output_dir or "")
    if storage.local_path(done.output_dir or "") is None:
        localize_run_config(folder, (done.config or {}).get("data"))
    return folder


def _eval_data(inputs: dict[str, Any], source: CellRun) -> str | None:
    """The evaluation cell's file, else None: the source's own validation split."""
    if inputs.get("eval_cell"):
        return dataset_file({"dataset_cell": inputs["eval_cell"]})[1]
    data = (outputs_of(source).config or {}).get("data")  # the upload's storage key
    if not data or not storage.exists(data, store=storage.uploads()):
        raise UserError(
            "The source adapter's dataset is gone, so there is no held-out split to evaluate "
            "on: pick an evaluation dataset cell."
        )
    return None


def transfer_config(
    inputs: dict[str, Any], source: CellRun, adapter: str | Path, out: Path, run: Path
) -> Any:
    """The engine's TransferConfig from the cell: every setting the form offers (blank: the
    contract's default), and the switches the form words its own way."""
    from finetune_core.contracts.settings import FORM
    from finetune_core.contracts.transfer import ABLATIONS, TransferConfig, transfer_settings
    from finetune_core.transfer.student import parse_target_modules

    given = {
        s.name: s.kind(inputs[s.name])
        for s in transfer_settings(FORM)
        if not blank(inputs.get(s.name))
    }
    unfiltered = bool(inputs.get("unfiltered"))
    # The unfiltered ablation is the main run itself when the main run is unfiltered.
    ablations = tuple(
        a
        for a in ABLATIONS
        if inputs.get(f"ablation_{a}") and not (a == "unfiltered" and unfiltered)
    )
    return TransferConfig(
        run=str(run),
        adapter=str(adapter),
        target=inputs["base_model"],
        output_dir=str(out),
        filtered=not unfiltered,
        ablations=ablations,
        target_modules=parse_target_modules(inputs.get("target_modules") or ""),
        eval_data=_eval_data(inputs, source),
        **given,
    )


def run_transfer(run: CellRun, job_id: int, task_id: str) -> None:
    """Move the adapter; settles the CellRun and the Job whatever happens."""
    space = open_run_space(run_key(job_id), whole=True)  # phases done resume, on any host
    try:
        _transfer_in(space, run, job_id, task_id)
    finally:
        space.close()


def _transfer_in(space: RunSpace, run: CellRun, job_id: int, task_id: str) -> None:
    from finetune_core.errors import FinetuneError
    from finetune_core.transfer import TransferStopped, transfer

    outputs: dict[str, Any] = {"output_dir": space.key}
    phases = Phases(outputs, filtered=not run.inputs.get("unfiltered"))
    progress = Reporter(job_id, task_id, line=phases.update, run=run, outputs=outputs)
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
        progress.save()
        cfg = transfer_config(
            run.inputs, source, local_copy(adapter), space.folder, source_run_copy(source)
        )
        # A resumed job (cancel then Resume, or a worker restart) reuses its folder's phases.
        try:
            report = transfer(
                cfg,
                hooks=progress.hooks(),
                resume=True,
            )
        finally:
            space.publish()  # what was done, kept for a resume on any host
    except TransferStopped as stopped:
        outputs["partial"] = stopped.partial
        phases.close("cancelled")
        cell_run_settle(run=run, outcome=RunStatus.CANCELLED, outputs=outputs)
        return
    except (UserError, FinetuneError) as exc:
        phases.close("failed")
        cell_run_fail(run=run, error=str(exc), outputs=outputs)
        return
    except Exception as exc:  # noqa: BLE001 - every failure must land on the job
        log.exception("transfer run %s failed", run.pk)
        phases.close("failed")
        cell_run_fail(run=run, error=f"{type(exc).__name__}: {exc}", outputs=outputs)
        return
    phases.close("done")
    adapter_key = storage.join(
        space.key, Path(report["adapter"]).relative_to(space.folder).as_posix()
    )
    outputs.update(report={**report, "adapter": adapter_key}, adapter_dir=adapter_key)
    accuracy = {k: v.get("accuracy") for k, v in report["accuracy"].items()}
    cell_run_settle(
        run=run,
        outcome=RunStatus.SUCCEEDED,
        outputs=outputs,
        result={"adapter_dir": adapter_key, "accuracy": accuracy},
    )
