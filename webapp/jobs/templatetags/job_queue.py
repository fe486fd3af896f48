"""{% queue_place job %}: where a queued job stands and what it waits for, in words;
{% team_jobs team %}: the team page's recent jobs."""

from __future__ import annotations

from typing import Any

from django import template

from webapp.jobs.models import Job
from webapp.jobs.selectors import job_list_for_team, job_queue_place
from webapp.teams.models import Team

register = template.Library()


@register.inclusion_tag("jobs/_queue_place.html")
def queue_place(job: object) -> dict[str, Any]:
    # A template may pass nothing (a run without a job yet): then there is nothing to say.
    return {"place": job_queue_place(job=job) if isinstance(job, Job) else None}


@register.inclusion_tag("jobs/_team_jobs.html")
def team_jobs(team: Team) -> dict[str, Any]:
    """The team page's recent jobs card."""
    return {"jobs": job_list_for_team(team=team, limit=10)}
