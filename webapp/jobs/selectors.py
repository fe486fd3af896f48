"""Reads for jobs."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from webapp.jobs.models import Job, JobEvent, JobStatus
from webapp.teams.models import Team


def job_list_for_team(*, team: Team, limit: int = 20) -> QuerySet[Job]:
    return team.jobs.all()[:limit]


def job_events(*, job: Job, after_id: int = 0) -> QuerySet[JobEvent]:
    return job.events.filter(id__gt=after_id)


# Jobs a person is waiting on in front of a screen: a playground answer, a chat completion.
INTERACTIVE_KINDS = ("cell.playground", "api.chat")


def interactive_job_waiting(*, longer_than_s: float) -> bool:
    """An interactive job has sat in the queue longer than `longer_than_s`: no free worker
    took it, so a background job running on one should make way."""
    cutoff = timezone.now() - timedelta(seconds=longer_than_s)
    return Job.objects.filter(
        status=JobStatus.QUEUED, kind__in=INTERACTIVE_KINDS, created_at__lte=cutoff
    ).exists()
