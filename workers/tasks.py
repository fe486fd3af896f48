"""Celery tasks. They take ids, read state from the database and write it back there."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from webapp.datasets.models import DatasetPurpose, DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_mark
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.recovery import jobs_recover
from webapp.jobs.services import job_fail, job_start, job_succeed
from webapp.projects.models import CellRun, RunStatus
from workers import eval_sets, services_bridge
from workers.celery import app
from workers.runners import RUNNERS

log = logging.getLogger(__name__)


@app.task(
    bind=True,
    name="workers.tasks.validate_dataset_version",
    acks_late=True,
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
        if version.dataset.purpose == DatasetPurpose.EVALUATION:  # prompts, not conversations
            report = eval_sets.validate_prompt_file(version.file.path)
        else:
            report = services_bridge.validate_dataset_file(
                version.file.path, fmt=version.format, model=version.preview_model
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


def _another_worker_has_it(job: Job, task_id: str) -> bool:
    """A fresh heartbeat under another task id: a live worker is on this job already."""
    if job.status != JobStatus.RUNNING or not job.heartbeat_at or job.celery_task_id == task_id:
        return False
    return timezone.now() - job.heartbeat_at < timedelta(seconds=settings.JOB_STALE_AFTER_S)


@app.task(
    bind=True,
    name="workers.tasks.run_cell",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=6 * 60 * 60,
    time_limit=6 * 60 * 60 + 120,
)
def run_cell(self: Task, cell_run_id: int) -> None:
    run = CellRun.objects.select_related("cell").filter(pk=cell_run_id).first()
    if run is None:
        return
    task_id = self.request.id or ""
    job = Job.objects.filter(pk=run.job_id).first() if run.job_id else None
    if job is not None:
        if job.is_finished:
            log.info("job %s is already %s; nothing to do", job.pk, job.status)
            return
        if _another_worker_has_it(job, task_id):
            log.warning("job %s is running elsewhere; dropping duplicate delivery", job.pk)
            return
        if job_start(job_id=job.pk, celery_task_id=task_id) is None:
            return
    CellRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    try:
        runner = RUNNERS.get(run.cell.kind)
        if job is not None and runner is not None:
            runner(run, job.pk, task_id)  # settles the run and the job itself
            return
        outputs = services_bridge.run_cell(run.cell.kind, run.inputs)
    except SoftTimeLimitExceeded:
        error = "The run took too long and was stopped."
    except Exception as exc:  # noqa: BLE001
        log.exception("cell run %s failed", cell_run_id)
        error = f"{type(exc).__name__}: {exc}"
    else:
        CellRun.objects.filter(pk=run.pk).update(
            status=RunStatus.SUCCEEDED, outputs=outputs, finished_at=timezone.now()
        )
        if run.job_id is not None:
            job_succeed(job_id=run.job_id)
        return
    CellRun.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED, outputs={**run.outputs, "error": error}, finished_at=timezone.now()
    )
    if run.job_id is not None:
        job_fail(job_id=run.job_id, error=error)


@app.task(
    bind=True,
    name="workers.tasks.select_final_adapter",
    acks_late=True,
    soft_time_limit=10 * 60,
    time_limit=11 * 60,
)
def select_final_adapter(self: Task, cell_run_id: int, which: str, job_id: int) -> None:
    """Make a checkpoint (or "last"/"best") the run's final adapter."""
    if job_start(job_id=job_id, celery_task_id=self.request.id or "") is None:
        return
    run = CellRun.objects.filter(pk=cell_run_id).first()
    output_dir = (run.outputs or {}).get("output_dir") if run else None
    if not output_dir:
        job_fail(job_id=job_id, error="This run has no output folder.")
        return
    try:
        adapter_dir = services_bridge.select_final(output_dir, which)
    except Exception as exc:  # noqa: BLE001
        message = str(exc) if services_bridge.is_user_error(exc) else f"{type(exc).__name__}: {exc}"
        job_fail(job_id=job_id, error=message)
        return
    with transaction.atomic():
        run = CellRun.objects.select_for_update().get(pk=cell_run_id)
        run.outputs = {**run.outputs, "final": which, "adapter_dir": adapter_dir}
        run.save(update_fields=["outputs"])
    job_succeed(job_id=job_id, result={"final": which})


@app.task(name="workers.tasks.recover_stale_jobs", acks_late=True, time_limit=300)
def recover_stale_jobs() -> int:
    """Periodic (celery beat): re-queue or fail jobs whose worker stopped heartbeating."""
    return len(jobs_recover())
