"""Hands jobs to Celery after the transaction that created them commits.

Tasks are sent by name through webapp.jobs.queue, so the web process never imports
`workers` (nor, through it, the engine).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from webapp.core.request_id import current_request
from webapp.jobs.models import Job
from webapp.jobs.queue import route, send
from webapp.jobs.services import job_fail
from webapp.jobs.turns import WAITING, job_waits_for_turn

log = logging.getLogger(__name__)


def _send(task: dict[str, Any], task_id: str, job_id: int) -> None:
    task_path, args, queue = task["path"], task["args"], task["queue"]
    try:
        send(task_path, args=args, task_id=task_id, queue=queue, request_id=task["request_id"])
    except Exception as exc:  # noqa: BLE001 - any broker failure must show on the job
        log.exception("could not enqueue %s for job %s", task_path, job_id)
        job_fail(job_id=job_id, error=f"Could not reach the task queue: {exc}")


def job_enqueue_on_commit(
    *, job: Job, task_path: str, args: list[Any], queue: str | None = None
) -> None:
    """Record the Celery task id now; send the task only once the job row is committed.

    The task's path and arguments go into the job's params, so stale-job recovery can
    send it again without knowing what kind of job it is. A GPU job over its team's
    TEAM_GPU_JOBS_SENT waits in the database for its team's turn (webapp.jobs.turns).
    """
    task_id = str(uuid.uuid4())
    queue = route(task_path, queue)  # stored resolved, so a re-send goes where this went
    # The web request that sent it; a re-send from a task (recovery, a team's turn) keeps
    # the first request's.
    request_id = current_request() or (job.params.get("_task") or {}).get("request_id", "")
    task = {"path": task_path, "args": args, "queue": queue, "request_id": request_id}
    waits = job_waits_for_turn(job=job, queue=queue)
    # _queued_at: recovery gives a fresh send some time to reach the broker.
    params = {k: v for k, v in job.params.items() if k != WAITING}
    job.params = {**params, "_task": task, "_queued_at": timezone.now().isoformat()}
    job.params |= {WAITING: True} if waits else {}
    Job.objects.filter(pk=job.pk).update(celery_task_id=task_id, params=job.params)
    job.celery_task_id = task_id
    if waits:
        return
    transaction.on_commit(lambda: _send(task, task_id, job.pk))
