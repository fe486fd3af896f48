"""Reads for jobs."""

from __future__ import annotations

from django.db.models import QuerySet

from webapp.jobs.models import Job, JobEvent
from webapp.teams.models import Team


def job_list_for_team(*, team: Team, limit: int = 20) -> QuerySet[Job]:
    return team.jobs.all()[:limit]


def job_events(*, job: Job, after_id: int = 0) -> QuerySet[JobEvent]:
    return job.events.filter(id__gt=after_id)
