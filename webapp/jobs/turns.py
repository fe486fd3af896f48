"""Turns between teams on the GPU queue: at most TEAM_GPU_JOBS_SENT of a team's jobs are in
the broker at a time; the rest wait here, queued, and are sent as jobs finish, one per team
a round, the team with the oldest waiting job first. One team's 50 jobs then put at most N
ahead of another team's single job, not 50. 0: every job is sent at once."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from webapp.jobs.models import Job, JobStatus
from webapp.jobs.queue import GPU
from webapp.jobs.services import job_event_add
from webapp.teams.models import Team

# In a job's params: it waits in the database for its team's turn, not in the broker.
WAITING = "_turn"
IN_BROKER = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.VALIDATING_FILES)


def _on_gpu(job: Job) -> bool:
    return (job.params.get("_task") or {}).get("queue") == GPU


def team_gpu_jobs_sent(*, team_id: int, besides: int | None = None) -> int:
    """The team's GPU jobs in the broker: queued there, or running (not yet acknowledged)."""
    live = Job.objects.filter(team_id=team_id, status__in=IN_BROKER).exclude(pk=besides)
    return sum(1 for job in live if _on_gpu(job) and not job.params.get(WAITING))


def job_waits_for_turn(*, job: Job, queue: str) -> bool:
    """Whether `job`, about to be sent to `queue`, waits for its team's turn instead. Under
    the team's row lock, so two sends at once count each other."""
    limit = settings.TEAM_GPU_JOBS_SENT
    if not limit or queue != GPU:
        return False
    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=job.team_id).first()
        return team_gpu_jobs_sent(team_id=job.team_id, besides=job.pk) >= limit


def _waiting() -> list[Job]:
    """Jobs waiting for their turn, oldest first."""
    waiting = Job.objects.filter(status=JobStatus.QUEUED, params__has_key=WAITING)
    return list(waiting.order_by("created_at", "id"))


def _send_next(team_id: int) -> int | None:
    """Sends the team's oldest waiting job if the team has room now; its id, or None."""
    from webapp.jobs.dispatch import job_enqueue_on_commit  # dispatch imports this module

    limit = settings.TEAM_GPU_JOBS_SENT
    with transaction.atomic():
        Team.objects.select_for_update().filter(pk=team_id).first()
        if limit and team_gpu_jobs_sent(team_id=team_id) >= limit:
            return None
        job = next((j for j in _waiting() if j.team_id == team_id), None)
        if job is None:
            return None
        job_event_add(job=job, message="Its team's turn on the GPU queue came: sent.")
        task = job.params["_task"]
        job_enqueue_on_commit(job=job, task_path=task["path"], args=task["args"], queue=GPU)
    return job.pk


def gpu_turns_release() -> list[int]:
    """Send waiting jobs whose team has room, in rounds of one job a team (the team with the
    oldest waiting job first). Called when a job finishes, and by recovery. The ids sent."""
    sent: list[int] = []
    while True:
        teams = list(dict.fromkeys(job.team_id for job in _waiting()))
        released = [pk for team_id in teams if (pk := _send_next(team_id)) is not None]
        if not released:
            return sent
        sent += released
