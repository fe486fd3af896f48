"""Celery tasks. They take ids, read state from the database and write it back there."""

from __future__ import annotations

import logging

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone

from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_mark
from webapp.jobs.models import JobStatus
from webapp.jobs.services import job_fail, job_start, job_succeed
from webapp.projects.models import CellRun, RunStatus
from workers import services_bridge
from workers.celery import app

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
        report = services_bridge.validate_dataset_file(version.file.path, fmt=version.format)
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
    name="workers.tasks.run_cell",
    acks_late=True,
    soft_time_limit=6 * 60 * 60,
    time_limit=6 * 60 * 60 + 120,
)
def run_cell(self: Task, cell_run_id: int) -> None:
    run = CellRun.objects.select_related("cell").filter(pk=cell_run_id).first()
    if run is None:
        return
    if run.job_id is not None:
        if job_start(job_id=run.job_id, celery_task_id=self.request.id or "") is None:
            return
    CellRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    try:
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
        status=RunStatus.FAILED, outputs={"error": error}, finished_at=timezone.now()
    )
    if run.job_id is not None:
        job_fail(job_id=run.job_id, error=error)
