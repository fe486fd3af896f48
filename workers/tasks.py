"""Celery tasks. They take ids, read state from the database and write it back there."""

from __future__ import annotations

import logging

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from finetune_core.contracts.layout import ADAPTER
from webapp.core import storage
from webapp.datasets.models import DatasetPurpose, DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_mark
from webapp.jobs import queue
from webapp.jobs.models import JobStatus
from webapp.jobs.recovery import jobs_recover
from webapp.jobs.services import job_fail, job_start, job_succeed
from webapp.projects.models import RunStatus
from webapp.projects.run_lifecycle import (
    cell_run_fail,
    cell_run_outputs_merge,
    cell_run_settle,
    cell_run_start,
)
from webapp.projects.run_outputs import outputs_of
from webapp.projects.selectors import cell_run_find
from workers import eval_sets, services_bridge
from workers.celery import app
from workers.runners import RUNNERS
from workers.workspace import fetch_upload, open_run_space

log = logging.getLogger(__name__)


@app.task(
    bind=True,
    name=queue.VALIDATE_DATASET,
    soft_time_limit=15 * 60,
    time_limit=16 * 60,
)
def validate_dataset_version(self: Task, version_id: int) -> None:
    version = DatasetVersion.objects.filter(pk=version_id).first()
    if version is None:
        log.warning("dataset version %s vanished before validation", version_id)
        return
    job_id = version.validation_job_id
    if job_id is not None:
        started = job_start(
            job_id=job_id, status=JobStatus.VALIDATING_FILES, celery_task_id=self.request.id or ""
        )
        if started is None:
            return  # cancelled or already finished: nothing to do
    dataset_version_mark(version_id=version_id, status=VersionStatus.VALIDATING)
    try:
        path = str(fetch_upload(version.file.name))  # a copy, where storage is not local
        if version.dataset.purpose == DatasetPurpose.EVALUATION:  # prompts, not conversations
            report = eval_sets.validate_prompt_file(path)
        else:
            report = services_bridge.validate_dataset_file(
                path, fmt=version.format, model=version.preview_model
            )
    except SoftTimeLimitExceeded:
        error = "Validation took too long and was stopped."
    except Exception as exc:  # noqa: BLE001 - any failure must land on the record, not vanish
        log.exception("validation of dataset version %s failed", version_id)
        error = f"{type(exc).__name__}: {exc}"
    else:
        ok = bool(report.get("ok"))
        dataset_version_mark(
            version_id=version_id,
            status=VersionStatus.VALID if ok else VersionStatus.INVALID,
            report=report,
            n_examples=report.get("n_examples"),
            detected_format=report.get("format"),
        )
        if job_id is not None:
            job_succeed(job_id=job_id, result={"ok": ok, "n_examples": report.get("n_examples")})
        return
    dataset_version_mark(
        version_id=version_id, status=VersionStatus.INVALID, report={"ok": False, "error": error}
    )
    if job_id is not None:
        job_fail(job_id=job_id, error=error)


@app.task(
    bind=True,
    name=queue.RUN_CELL,
    soft_time_limit=6 * 60 * 60,
    time_limit=6 * 60 * 60 + 120,
)
def run_cell(self: Task, cell_run_id: int) -> None:
    task_id = self.request.id or ""
    run = cell_run_start(run_id=cell_run_id, task_id=task_id)
    if run is None:
        return  # gone, finished, or a live worker has it
    try:
        runner = RUNNERS.get(run.cell.kind)
        if run.job_id is not None and runner is not None:
            runner(run, run.job_id, task_id)  # settles the run and the job itself
            return
        outputs = services_bridge.run_cell(run.cell.kind, run.inputs)
    except SoftTimeLimitExceeded:
        error = "The run took too long and was stopped."
    except Exception as exc:  # noqa: BLE001
        log.exception("cell run %s failed", cell_run_id)
        error = f"{type(exc).__name__}: {exc}"
    else:
        cell_run_settle(run=run, outcome=RunStatus.SUCCEEDED, outputs=outputs)
        return
    cell_run_fail(run=run, error=error, outputs=run.outputs)


@app.task(
    bind=True,
    name=queue.SELECT_FINAL,
    soft_time_limit=10 * 60,
    time_limit=11 * 60,
)
def select_final_adapter(self: Task, cell_run_id: int, which: str, job_id: int) -> None:
    """Make a checkpoint (or "last"/"best") the run's final adapter."""
    if job_start(job_id=job_id, celery_task_id=self.request.id or "") is None:
        return
    run = cell_run_find(run_id=cell_run_id)
    output_dir = outputs_of(run).output_dir if run else None
    if not output_dir:
        job_fail(job_id=job_id, error="This run has no output folder.")
        return
    space = open_run_space(output_dir, whole=True)  # every checkpoint, to choose among
    try:
        services_bridge.select_final(str(space.folder), which)
        space.publish()
    except Exception as exc:  # noqa: BLE001
        message = str(exc) if services_bridge.is_user_error(exc) else f"{type(exc).__name__}: {exc}"
        job_fail(job_id=job_id, error=message)
        return
    finally:
        space.close()
    adapter_dir = storage.join(output_dir, ADAPTER)
    cell_run_outputs_merge(run_id=cell_run_id, values={"final": which, "adapter_dir": adapter_dir})
    job_succeed(job_id=job_id, result={"final": which})


# Both limits set here: a task given only time_limit inherits the global soft limit, and
# beat refuses to send a task whose soft limit exceeds its hard one (SchedulingError).
@app.task(name=queue.RECOVER_STALE_JOBS, soft_time_limit=240, time_limit=300)
def recover_stale_jobs() -> int:
    """Periodic (celery beat): re-queue or fail jobs whose worker stopped heartbeating."""
    return len(jobs_recover())
