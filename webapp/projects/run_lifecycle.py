"""A cell run's life: start, progress, settle on a worker; requeue, or follow its job when
another path stopped it. Every worker write to a CellRun goes through here, and the run's
status and its Job's move together here: as `settled_pair` decides after a runner's
outcome, and as `cell_runs_follow_job` does after a cancel or stale-job recovery.

Locks are taken job first, then run, the order job_cancel and stale-job recovery use
(their job_stopped receiver then updates the run), so the two never deadlock.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from webapp.jobs.models import FINISHED, Job, JobStatus
from webapp.jobs.services import job_fail, job_requeue, job_start, job_succeed
from webapp.projects.estimate import finished_run_measure
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.run_outputs import outputs_check

log = logging.getLogger(__name__)

# The runner's outcome: it produced a result, it failed, or should_stop made it stop.
OUTCOMES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
LIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
JOB_ACTIVE = frozenset({JobStatus.RUNNING, JobStatus.VALIDATING_FILES})  # job_succeed's from


def settled_pair(outcome: str, job_status: str | None) -> tuple[str | None, str | None]:
    """(run status, job status) after a runner's outcome, given the job's status now;
    None leaves that one as it is.

    - A result or a failure is the run's last word, whatever happened to the job
      meanwhile; the job follows only while it is live (a cancelled job stays so).
    - A stop settles the run only when its job was cancelled. Any other stop (a newer
      delivery took the job over, recovery failed it) leaves the run to that path.
    """
    if outcome not in OUTCOMES:
        expected = ", ".join(str(o) for o in OUTCOMES)
        raise ValueError(f"unknown run outcome {str(outcome)!r}; expected one of {expected}")
    if outcome == RunStatus.CANCELLED:
        return (RunStatus.CANCELLED if job_status == JobStatus.CANCELLED else None), None
    if outcome == RunStatus.SUCCEEDED:
        return outcome, (JobStatus.SUCCEEDED if job_status in JOB_ACTIVE else None)
    live = job_status is not None and job_status not in FINISHED
    return outcome, (JobStatus.FAILED if live else None)


def _another_worker_has_it(job: Job, task_id: str) -> bool:
    """A fresh heartbeat under another task id: a live worker is on this job already."""
    if job.status != JobStatus.RUNNING or not job.heartbeat_at or job.celery_task_id == task_id:
        return False
    return timezone.now() - job.heartbeat_at < timedelta(seconds=settings.JOB_STALE_AFTER_S)


def cell_run_start(*, run_id: int, task_id: str) -> CellRun | None:
    """The run (its cell loaded) and its job go to running together. None when there is
    nothing to do: the run is gone, its job finished, or a live worker holds the job; or
    when job_start failed the job because its worker process kept dying on it."""
    run = CellRun.objects.select_related("cell").filter(pk=run_id).first()
    if run is None:
        return None
    with transaction.atomic():
        if run.job_id is not None:
            job = Job.objects.select_for_update().filter(pk=run.job_id).first()
            if job is not None and job.is_finished:
                log.info("job %s is already %s; nothing to do", job.pk, job.status)
                return None
            if job is not None and _another_worker_has_it(job, task_id):
                log.warning("job %s is running elsewhere; dropping duplicate delivery", job.pk)
                return None
            if job is not None and job_start(job_id=job.pk, celery_task_id=task_id) is None:
                return None
        CellRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    run.status = RunStatus.RUNNING
    return run


def cell_run_progress(*, run: CellRun, outputs: dict[str, Any]) -> None:
    """The outputs so far (live progress a page polls); the status stays as it is."""
    CellRun.objects.filter(pk=run.pk).update(outputs=outputs_check(run.cell.kind, outputs))


def cell_run_outputs_merge(*, run_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """Merge keys into a run's outputs under a row lock (other jobs write there too)."""
    with transaction.atomic():
        run = CellRun.objects.select_for_update().get(pk=run_id)
        merged = outputs_check(run.cell.kind, {**(run.outputs or {}), **values})
        CellRun.objects.filter(pk=run_id).update(outputs=merged)
    return merged


def cell_run_settle(
    *,
    run: CellRun,
    outcome: str,
    outputs: dict[str, Any],
    result: dict[str, Any] | None = None,
    error: str = "",
) -> str | None:
    """End the run with the runner's outcome and move its job with it (`settled_pair`).
    `result` is the job's on success, `error` its message on failure. Returns the run's
    status now, or None when the run was deleted meanwhile."""
    outputs_check(run.cell.kind, outputs)
    with transaction.atomic():
        job = None
        if run.job_id is not None:
            job = Job.objects.select_for_update().filter(pk=run.job_id).first()
        locked = CellRun.objects.select_for_update().filter(pk=run.pk).first()
        if locked is None:
            return None
        run_status, job_status = settled_pair(outcome, job.status if job else None)
        changes: dict[str, Any] = {"outputs": outputs}
        if run_status is not None:
            changes.update(status=run_status, finished_at=timezone.now())
        CellRun.objects.filter(pk=run.pk).update(**changes)
        if job_status == JobStatus.SUCCEEDED:
            job_succeed(job_id=job.pk, result=result)
        elif job_status == JobStatus.FAILED:
            job_fail(job_id=job.pk, error=error)
        if run_status == RunStatus.SUCCEEDED and run.cell.kind == "finetune":
            # What it measured: the next estimate of its model on its lane uses it.
            finished_run_measure(run=run, job=job, outputs=outputs)
    return run_status or locked.status


def cell_run_fail(*, run: CellRun, error: str, outputs: dict[str, Any] | None = None) -> None:
    """The run failed with `error`, kept in its outputs (beside what it had done) and its job."""
    cell_run_settle(
        run=run,
        outcome=RunStatus.FAILED,
        outputs={**(outputs or {}), "error": error},
        error=error,
    )


def cell_runs_follow_job(*, job: Job) -> int:
    """The job stopped by another path than its runner (a user's cancel, stale-job
    recovery): its runs still live take its status. A run its runner settled keeps it."""
    runs = CellRun.objects.filter(job_id=job.pk, status__in=LIVE)
    return runs.update(status=job.status, finished_at=job.finished_at)


def cell_run_requeue(*, run: CellRun, job: Job, reason: str) -> Job:
    """The run and its failed or cancelled job go back to the queue together
    (job_requeue's ValidationError, and no change, when the job is not stopped)."""
    with transaction.atomic():
        requeued = job_requeue(job=job, reason=reason)
        CellRun.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED, finished_at=None)
    return requeued
