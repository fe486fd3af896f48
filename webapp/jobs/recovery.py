"""Stale-job recovery: a job whose worker died must never stay "running" forever.

A running job's worker refreshes heartbeat_at at least every few seconds. When it has
not for `stale_after_s`, the worker is presumed dead: the job is sent again (its task
resumes from the last checkpoint), unless JOB_MAX_DELIVERIES workers already started it
(job_start counts them, one bound for both): then it is failed with a message saying
why. Nor "queued" forever: a queued job whose task the broker no longer holds (lost in
a broker restart, or never sent) is sent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from webapp.jobs.dispatch import job_enqueue_on_commit
from webapp.jobs.models import EventLevel, Job, JobStatus
from webapp.jobs.queue import DEFAULT, ROUTES, held_task_ids
from webapp.jobs.services import job_died_text, job_event_add, job_fail
from webapp.jobs.turns import WAITING, gpu_turns_release

ACTIVE = (JobStatus.RUNNING, JobStatus.VALIDATING_FILES)
# A job queued this recently may still be on its way to the broker (sent on commit).
SEND_GRACE_S = 60


@dataclass(frozen=True)
class Recovery:
    job_id: int
    # "requeued", "failed", "resent" (a queued job the broker lost), or "sent" (its
    # team's turn on the GPU queue came)
    action: str


def stale_jobs(*, stale_after_s: int) -> list[Job]:
    cutoff = timezone.now() - timedelta(seconds=stale_after_s)
    return list(
        Job.objects.filter(status__in=ACTIVE).filter(
            Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
        )
    )


def _recover_one(job: Job, *, stale_after_s: int) -> Recovery | None:
    task = job.params.get("_task")
    silent = f"no heartbeat for over {stale_after_s} s"
    with transaction.atomic():
        # Only if still stale and active: a worker that woke up meanwhile keeps its job.
        cutoff = timezone.now() - timedelta(seconds=stale_after_s)
        job = (
            Job.objects.select_for_update()
            .filter(pk=job.pk, status__in=ACTIVE)
            .filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True))
            .first()
        )
        if job is None:
            return None
        limit = settings.JOB_MAX_DELIVERIES
        if task and job.deliveries < limit:
            Job.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED, heartbeat_at=None)
            job_event_add(
                job=job,
                level=EventLevel.WARNING,
                message=f"The worker stopped responding ({silent}); re-queued to resume "
                f"from the last checkpoint (start {job.deliveries + 1} of {limit}).",
            )
            job_enqueue_on_commit(
                job=job, task_path=task["path"], args=task["args"], queue=task.get("queue")
            )
            return Recovery(job.pk, "requeued")
        error = (
            job_died_text(job=job)
            if task
            else f"The worker running this job stopped responding ({silent}) and the job "
            "cannot be sent again; it was stopped."
        )
        job_fail(job_id=job.pk, error=error)
    return Recovery(job.pk, "failed")


def jobs_recover(*, stale_after_s: int | None = None) -> list[Recovery]:
    stale_after_s = settings.JOB_STALE_AFTER_S if stale_after_s is None else stale_after_s
    done = []
    for job in stale_jobs(stale_after_s=stale_after_s):
        outcome = _recover_one(job, stale_after_s=stale_after_s)
        if outcome is not None:
            done.append(outcome)
    turns = [Recovery(pk, "sent") for pk in gpu_turns_release()]
    return done + jobs_resend_lost() + turns


def _queued_at(job: Job) -> datetime:
    at = job.params.get("_queued_at")
    return datetime.fromisoformat(at) if at else job.created_at


def jobs_resend_lost(*, grace_s: int = SEND_GRACE_S) -> list[Recovery]:
    """Send again each queued job whose task the broker no longer holds: lost when the
    broker restarted without persistence, or never sent (the web process died between
    commit and send). A fresh id each time, so a late original is dropped as a duplicate."""
    queued = [
        j
        for j in Job.objects.filter(status=JobStatus.QUEUED)
        if j.params.get("_task") and not j.params.get(WAITING)  # waiting: never sent
    ]
    queues = set(ROUTES.values()) | {j.params["_task"].get("queue") or DEFAULT for j in queued}
    held = held_task_ids(queues) if queued else set()
    if held is None:
        return []
    cutoff = timezone.now() - timedelta(seconds=grace_s)
    lost = [j for j in queued if j.celery_task_id not in held and _queued_at(j) <= cutoff]
    return [outcome for outcome in map(_resend_one, lost) if outcome is not None]


def _resend_one(job: Job) -> Recovery | None:
    with transaction.atomic():
        # Only if still queued under the same task: it may have started or been sent again.
        job = (
            Job.objects.select_for_update()
            .filter(pk=job.pk, status=JobStatus.QUEUED, celery_task_id=job.celery_task_id)
            .first()
        )
        if job is None:
            return None
        job_event_add(
            job=job,
            level=EventLevel.WARNING,
            message="The task queue no longer held this job (a broker restart, or a send "
            "that never happened); it was sent again.",
        )
        task = job.params["_task"]
        job_enqueue_on_commit(
            job=job, task_path=task["path"], args=task["args"], queue=task.get("queue")
        )
    return Recovery(job.pk, "resent")
