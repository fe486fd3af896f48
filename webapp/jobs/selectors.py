"""Reads for jobs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import CharField, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from webapp.jobs.models import Job, JobEvent, JobStatus
from webapp.jobs.queue import BACKGROUND, lane_of
from webapp.teams.models import Team

# States in which a worker holds the job.
HELD = (JobStatus.RUNNING, JobStatus.VALIDATING_FILES)


def job_list_for_team(*, team: Team, limit: int = 20) -> QuerySet[Job]:
    return team.jobs.all()[:limit]


def job_events(*, job: Job, after_id: int = 0) -> QuerySet[JobEvent]:
    return job.events.filter(id__gt=after_id)


def _on_queues(jobs: QuerySet[Job], queues: Iterable[str]) -> QuerySet[Job]:
    """Jobs whose task was sent to one of `queues` (dispatch records the resolved queue)."""
    # Cast: a bare key transform would compare as JSON, and SQLite rejects plain strings.
    queue = Cast(KeyTextTransform("queue", "params___task"), CharField())
    return jobs.annotate(task_queue=queue).filter(task_queue__in=list(queues))


def person_job_waiting(*, queues: Iterable[str], longer_than_s: float) -> Job | None:
    """The oldest job a person started (anything but background work) that has sat on one
    of `queues` longer than `longer_than_s`: no free worker took it, so background work
    running on a worker that serves those queues should make way."""
    foreground = [queue for queue in queues if queue != BACKGROUND]
    return _waiting(foreground, longer_than_s).first()


def jobs_waiting(*, queues: Iterable[str], kinds: Iterable[str], longer_than_s: float) -> list[Job]:
    """Queued jobs of `kinds` on `queues` that no worker has taken for `longer_than_s`,
    oldest first: a long job on a worker with one slot answers them between its steps."""
    return list(_waiting(queues, longer_than_s).filter(kind__in=list(kinds)))


def _waiting(queues: Iterable[str], longer_than_s: float) -> QuerySet[Job]:
    cutoff = timezone.now() - timedelta(seconds=longer_than_s)
    waiting = Job.objects.filter(status=JobStatus.QUEUED, created_at__lte=cutoff)
    return _on_queues(waiting, queues).order_by("created_at", "id")


@dataclass(frozen=True)
class Occupant:
    """A job a worker of the waiting job's lane is running now."""

    job: Job | None  # None: another team's job, which this team may not see
    background: bool  # background work (keeping an adapter transferable)
    steps_aside: bool  # it makes way for the waiting job within seconds


@dataclass(frozen=True)
class QueuePlace:
    """Where a queued job stands: its queue, its place among that queue's queued jobs
    (oldest first, 1 = next) and what the workers serving that queue are busy with."""

    queue: str
    position: int
    queued: int
    background: bool
    running: list[Occupant] = field(default_factory=list)


def job_queue_place(*, job: Job) -> QueuePlace | None:
    """None unless the job is queued and was sent to a queue."""
    queue = ((job.params or {}).get("_task") or {}).get("queue")
    if job.status != JobStatus.QUEUED or not queue:
        return None
    queued = _on_queues(Job.objects.filter(status=JobStatus.QUEUED), [queue])
    ahead = queued.filter(
        Q(created_at__lt=job.created_at) | Q(created_at=job.created_at, id__lt=job.id)
    )
    busy = _on_queues(Job.objects.filter(status__in=HELD), lane_of(queue))
    running = [_occupant(other, waiting=job) for other in busy.select_related("created_by", "team")]
    return QueuePlace(
        queue=queue,
        position=ahead.count() + 1,
        queued=queued.count(),
        background=queue == BACKGROUND,
        running=running,
    )


def _occupant(job: Job, *, waiting: Job) -> Occupant:
    background = job.task_queue == BACKGROUND  # type: ignore[attr-defined] - annotated
    return Occupant(
        job=job if job.team_id == waiting.team_id else None,
        background=background,
        steps_aside=background and waiting.params["_task"]["queue"] != BACKGROUND,
    )
