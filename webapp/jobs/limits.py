"""TEAM_ACTIVE_JOBS: how many jobs a team may have queued or running at once."""

from __future__ import annotations

from django.conf import settings

from webapp.core.limits import LimitExceeded
from webapp.jobs.models import FINISHED, Job, JobStatus
from webapp.teams.models import Team

# Waiting for or holding a worker; a paused job holds neither.
ACTIVE = tuple(s for s in JobStatus.values if s not in FINISHED and s != JobStatus.PAUSED)
# Neither counted nor refused: an upload's validation is bounded by the storage limit.
UNCOUNTED_KINDS = ("validate_dataset",)


def team_active_jobs(*, team: Team) -> int:
    active = Job.objects.filter(team=team, status__in=ACTIVE)
    return active.exclude(kind__in=UNCOUNTED_KINDS).count()


def team_job_slot_check(*, team: Team, kind: str = "") -> None:
    """Refuses one more job (of `kind`) over the limit. Call inside the transaction that
    creates the job: the team's row lock makes two concurrent creates count each other."""
    limit = settings.TEAM_ACTIVE_JOBS
    if not limit or kind in UNCOUNTED_KINDS:
        return
    Team.objects.select_for_update().filter(pk=team.pk).first()
    active = team_active_jobs(team=team)
    if active >= limit:
        raise LimitExceeded(
            f"Your team has {active} jobs queued or running, and its limit is {limit}. "
            "Wait for one to finish, or cancel one, then try again.",
            status=429,
            api_code="team_job_limit",
        )
