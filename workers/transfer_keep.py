"""Keep a fine-tune transferable: the k seeds and the Trans-LoRA discriminator, trained
beside the adapter while its dataset still exists (a job of its own, queued when a
fine-tune with "keep transferable" succeeds, or from the button on its run page)."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task

from webapp.datasets.models import DatasetVersion
from webapp.jobs import queue
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.services import job_fail, job_start, job_step_aside, job_succeed
from webapp.projects.finetune_config import effective_hparams
from webapp.projects.job_names import job_title
from webapp.projects.models import CellRun
from webapp.projects.run_lifecycle import cell_run_outputs_merge
from webapp.projects.run_outputs import outputs_of
from webapp.projects.selectors import cell_run_find
from workers.celery import app
from workers.reporter import Line, Reporter
from workers.workspace import localize_run_config, open_run_space

log = logging.getLogger(__name__)

# Sized for the product: 100 real inputs and as many synthetic ones, 6 epochs (fewer left
# the discriminator unable to tell 3-digit sums from real 2-digit ones; transfer README).
N_SEEDS, N_REAL, EPOCHS = 5, 100, 6
ASIDE = (
    "Paused for '{title}', which a person started and is waiting for on this worker; "
    "it goes on from its last checkpoint after that."
)


LABELS = {"generate": "sampling synthetic inputs", "train": "training the discriminator"}


def keep_line(phase: str, current: int, total: int | None, info: dict[str, Any]) -> Line:
    """Hooks.progress for the discriminator: the job's progress bar."""
    return Line(current, total, f"{LABELS.get(phase, phase)}: {current} / {total}", key=phase)


def _task_name(run: CellRun) -> str | None:
    """The dataset's name, asked about in the discriminator's question ("... from <task>
    dataset?"); None falls back to the data file's name."""
    version = DatasetVersion.objects.select_related("dataset").filter(
        pk=outputs_of(run).dataset_version
    )
    found = version.first()
    return found.dataset.name if found else None


def keep_transferable(run: CellRun, job_id: int, task_id: str) -> None:
    """Train the discriminator; the run's outputs["transferable"] says how it went."""
    from finetune_core.errors import FinetuneError
    from finetune_core.transfer import DiscriminatorConfig, TransferStopped
    from finetune_core.transfer import train_discriminator as train

    state: dict[str, Any] = {"job": job_id, "status": "running"}
    cell_run_outputs_merge(run_id=run.pk, values={"transferable": state})
    started = time.monotonic()
    progress = Reporter(job_id, task_id, line=keep_line, make_way=True)
    space = open_run_space(outputs_of(run).output_dir or "")  # the seeds go beside the adapter
    if space.remote:
        localize_run_config(space.folder, (outputs_of(run).config or {}).get("data"))
    try:
        summary = train(
            DiscriminatorConfig(
                run=str(space.folder),
                task=_task_name(run),
                n_seeds=N_SEEDS,
                n_real=N_REAL,
                epochs=EPOCHS,
                quantization=effective_hparams(run.inputs)["quantization"],
                seed=int(effective_hparams(run.inputs)["seed"]),
            ),
            hooks=progress.hooks(),
            resume=True,  # a job that stepped aside (or crashed) goes on from its checkpoint
        )
    except TransferStopped:
        waiting = progress.make_way.waiting if progress.make_way else None
        aside = ASIDE.format(title=job_title(waiting)) if waiting else ""
        if aside and not progress.cancelled() and job_step_aside(job_id=job_id, reason=aside):
            cell_run_outputs_merge(
                run_id=run.pk, values={"transferable": {**state, "status": "queued"}}
            )
            return
        state.update(status="cancelled", error="Stopped before the discriminator was trained.")
    except FinetuneError as exc:  # data too small, model cannot sample, ...
        state.update(status="failed", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure must land on the job
        log.exception("keeping run %s transferable failed", run.pk)
        state.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    else:
        keep = ("seeds", "real", "synthetic", "task", "steps", "train_loss", "val_loss")
        state.update(status="succeeded", **{k: summary.get(k) for k in keep})
    finally:
        space.publish()  # seeds and discriminator (and its checkpoint) into the store
        space.close()
    state["seconds"] = round(time.monotonic() - started, 1)
    cell_run_outputs_merge(run_id=run.pk, values={"transferable": state})
    if state["status"] == "succeeded":
        job_succeed(job_id=job_id, result=state)
    elif state["status"] == "failed":
        job_fail(job_id=job_id, error=state["error"])
    # cancelled: the job is already marked so by whoever cancelled it


@app.task(
    bind=True,
    name=queue.MAKE_TRANSFERABLE,
    soft_time_limit=2 * 60 * 60,
    time_limit=2 * 60 * 60 + 120,
)
def make_transferable(self: Task, cell_run_id: int, job_id: int) -> None:
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.is_finished:
        return
    if job_start(job_id=job_id, celery_task_id=self.request.id or "") is None:
        return
    run = cell_run_find(run_id=cell_run_id)
    if run is None or not outputs_of(run).output_dir:
        job_fail(job_id=job_id, error="The fine-tune run or its output folder is gone.")
        return
    keep_transferable(run, job_id, self.request.id or "")
    if Job.objects.filter(pk=job_id, status=JobStatus.RUNNING).exists():
        job_fail(job_id=job_id, error="Stopped without a result.")
