"""Job state transitions. Workers and views both write job state only through these."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from webapp.jobs.limits import team_job_slot_check
from webapp.jobs.models import FINISHED, MEMORY_ESTIMATE, EventLevel, Job, JobEvent, JobStatus
from webapp.jobs.signals import job_stopped
from webapp.teams.models import Team


def job_event_add(
    *, job: Job, message: str, level: str = EventLevel.INFO, data: dict[str, Any] | None = None
) -> JobEvent:
    return JobEvent.objects.create(job=job, level=level, message=message[:500], data=data or {})


@transaction.atomic
def job_create(
    *,
    team: Team,
    kind: str,
    params: dict[str, Any] | None = None,
    created_by: AbstractBaseUser | None = None,
) -> Job:
    team_job_slot_check(team=team, kind=kind)  # over TEAM_ACTIVE_JOBS: refused
    job = Job.objects.create(team=team, kind=kind, params=params or {}, created_by=created_by)
    job_event_add(job=job, message="Job queued")
    return job


def _transition(job_id: int, allowed_from: set[str], **changes: Any) -> Job | None:
    """Apply changes only if the job is in an allowed state; returns None otherwise.

    The conditional UPDATE makes a late worker unable to resurrect a cancelled job.
    """
    updated = Job.objects.filter(pk=job_id, status__in=allowed_from).update(**changes)
    return Job.objects.get(pk=job_id) if updated else None


def job_died_text(*, job: Job) -> str:
    """Why a job that keeps losing its worker process was failed, naming the likely cause
    and, for a fine-tune, the memory its run was estimated to need."""
    text = (
        f"The worker process died {job.deliveries} times while running this job — most "
        "often the out-of-memory killer"
    )
    memory = job.params.get(MEMORY_ESTIMATE)
    if memory:
        text += (
            f"; the memory estimate for this run was {memory / 2**30:.1f} GiB (lower "
            "batch_size or max_length, or use quantization nf4, to need less)"
        )
    return text + ". It was not started again; resume it once the cause is fixed."


def job_start(
    *, job_id: int, status: str = JobStatus.RUNNING, celery_task_id: str = ""
) -> Job | None:
    """A worker starts the job: one more delivery, counted under the job's row lock. None
    when the job is not startable, or when JOB_MAX_DELIVERIES deliveries already started
    and none finished (each one's process died): then the job fails, and its message is
    acknowledged instead of being handed out again forever."""
    # Also from `status` itself: an acks_late task redelivered after a worker crash resumes.
    startable = {JobStatus.QUEUED, JobStatus.PAUSED, status}
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, status__in=startable).first()
        if job is None:
            return None
        if job.deliveries >= settings.JOB_MAX_DELIVERIES:
            job_fail(job_id=job_id, error=job_died_text(job=job))
            return None
        now = timezone.now()
        changes: dict[str, Any] = {
            "status": status,
            "heartbeat_at": now,
            "started_at": job.started_at or now,
            "deliveries": job.deliveries + 1,
        }
        if celery_task_id:
            changes["celery_task_id"] = celery_task_id
        Job.objects.filter(pk=job_id).update(**changes)
        for field, value in changes.items():
            setattr(job, field, value)
        job_event_add(job=job, message=f"Job {job.get_status_display().lower()}")
    return job


def job_progress(
    *,
    job_id: int,
    current: int,
    total: int | None = None,
    message: str = "",
    metrics: dict[str, Any] | None = None,
) -> Job | None:
    active = {JobStatus.RUNNING, JobStatus.VALIDATING_FILES}
    changes: dict[str, Any] = {
        "progress_current": current,
        "heartbeat_at": timezone.now(),
        "progress_message": message[:200],
    }
    if total is not None:
        changes["progress_total"] = total
    if metrics is not None:
        changes["metrics"] = metrics
    return _transition(job_id, active, **changes)


def _turns_release() -> None:
    """A job finished: a team waiting for its turn on the GPU queue may send one now."""
    from webapp.jobs.turns import gpu_turns_release  # turns imports this module

    transaction.on_commit(gpu_turns_release)


def job_succeed(*, job_id: int, result: dict[str, Any] | None = None) -> Job | None:
    now = timezone.now()
    job = _transition(
        job_id,
        {JobStatus.RUNNING, JobStatus.VALIDATING_FILES},
        status=JobStatus.SUCCEEDED,
        result=result or {},
        finished_at=now,
        heartbeat_at=now,
    )
    if job is not None:
        job_event_add(job=job, message="Job succeeded")
        _turns_release()
    return job


def job_fail(*, job_id: int, error: str) -> Job | None:
    now = timezone.now()
    active = set(JobStatus.values) - FINISHED
    job = _transition(job_id, active, status=JobStatus.FAILED, error=error, finished_at=now)
    if job is not None:
        job_event_add(job=job, message="Job failed", level=EventLevel.ERROR, data={"error": error})
        job_stopped.send(sender=Job, job=job)
        _turns_release()
    return job


def job_cancel(*, job: Job, by: AbstractBaseUser | None = None) -> Job:
    if job.is_finished:
        raise ValidationError("This job has already finished.")
    updated = _transition(
        job.pk,
        set(JobStatus.values) - FINISHED,
        status=JobStatus.CANCELLED,
        finished_at=timezone.now(),
    )
    if updated is None:
        raise ValidationError("This job has already finished.")
    who = by.get_username() if by is not None else "system"
    job_event_add(job=updated, message=f"Job cancelled by {who}", level=EventLevel.WARNING)
    job_stopped.send(sender=Job, job=updated)
    _turns_release()
    return updated


def job_requeue(*, job: Job, reason: str) -> Job:
    """Put a failed or cancelled job back in the queue (its worker resumes from checkpoints)."""
    if job.status == JobStatus.SUCCEEDED:
        raise ValidationError("This job has already finished.")
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise ValidationError("This job is still queued or running; there is nothing to resume.")
    updated = _transition(
        job.pk,
        {JobStatus.FAILED, JobStatus.CANCELLED},
        status=JobStatus.QUEUED,
        error="",
        finished_at=None,
        heartbeat_at=None,
        deliveries=0,  # a person asked again: the workers get their tries afresh
    )
    if updated is None:
        raise ValidationError("This job changed state meanwhile; reload the page.")
    job_event_add(job=updated, message=reason)
    return updated


@transaction.atomic
def job_step_aside(*, job_id: int, reason: str) -> Job | None:
    """A running background job goes back to the end of the queue, behind the work that is
    waiting; its worker resumes from what it saved. None if it was no longer running."""
    from webapp.jobs.dispatch import job_enqueue_on_commit  # dispatch imports this module

    # Handed back by a live worker: no delivery so far died on it.
    job = _transition(
        job_id, {JobStatus.RUNNING}, status=JobStatus.QUEUED, heartbeat_at=None, deliveries=0
    )
    if job is None:
        return None
    job_event_add(job=job, message=reason)
    task = job.params["_task"]
    job_enqueue_on_commit(
        job=job, task_path=task["path"], args=task["args"], queue=task.get("queue")
    )
    return job
