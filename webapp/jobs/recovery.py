"""Stale-job recovery: a job whose worker died must never stay "running" forever.

A running job's worker refreshes heartbeat_at at least every few seconds. When it has
not for `stale_after_s`, the worker is presumed dead: the job is sent again (its task
resumes from the last checkpoint) up to `max_recoveries` times, then failed with a
message saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from webapp.jobs.dispatch import job_enqueue_on_commit
from webapp.jobs.models import EventLevel, Job, JobStatus
from webapp.jobs.services import job_event_add, job_fail

ACTIVE = (JobStatus.RUNNING, JobStatus.VALIDATING_FILES)


@dataclass(frozen=True)
class Recovery:
    job_id: int
    action: str  # "requeued" or "failed"


def stale_jobs(*, stale_after_s: int) -> list[Job]:
    cutoff = timezone.now() - timedelta(seconds=stale_after_s)
    return list(
        Job.objects.filter(status__in=ACTIVE).filter(
            Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
        )
    )


def _recover_one(job: Job, *, stale_after_s: int, max_recoveries: int) -> Recovery | None:
    task = job.params.get("_task")
    recoveries = int(job.params.get("recoveries", 0))
    silent = f"no heartbeat for over {stale_after_s} s"
    with transaction.atomic():
        # Only if still stale and active: a worker that woke up meanwhile keeps its job.
        cutoff = timezone.now() - timedelta(seconds=stale_after_s)
        claimed = (
            Job.objects.filter(pk=job.pk, status__in=ACTIVE)
            .filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True))
            .update(
                status=JobStatus.QUEUED,
                heartbeat_at=None,
                params={**job.params, "recoveries": recoveries + 1},
            )
        )
        if not claimed:
            return None
        job.refresh_from_db()
        if task and recoveries < max_recoveries:
            job_event_add(
                job=job,
                level=EventLevel.WARNING,
                message=f"The worker stopped responding ({silent}); re-queued to resume "
                f"from the last checkpoint (recovery {recoveries + 1} of {max_recoveries}).",
            )
            job_enqueue_on_commit(
                job=job, task_path=task["path"], args=task["args"], queue=task.get("queue")
            )
            return Recovery(job.pk, "requeued")
    job_fail(
        job_id=job.pk,
        error=f"The worker running this job stopped responding ({silent}) and the job was "
        f"recovered {recoveries} time(s) already; it was stopped. Resume it to continue "
        "from the last checkpoint.",
    )
    return Recovery(job.pk, "failed")


def jobs_recover(
    *, stale_after_s: int | None = None, max_recoveries: int | None = None
) -> list[Recovery]:
    stale_after_s = settings.JOB_STALE_AFTER_S if stale_after_s is None else stale_after_s
    max_recoveries = settings.JOB_MAX_RECOVERIES if max_recoveries is None else max_recoveries
    done = []
    for job in stale_jobs(stale_after_s=stale_after_s):
        outcome = _recover_one(job, stale_after_s=stale_after_s, max_recoveries=max_recoveries)
        if outcome is not None:
            done.append(outcome)
    return done
