"""Hands jobs to Celery after the transaction that created them commits.

Tasks are named by dotted path and imported only when sent, so the web process never
imports workers' heavier modules at start-up.
"""

from __future__ import annotations

import logging
import uuid
from importlib import import_module
from typing import Any

from django.db import transaction

from webapp.jobs.models import Job
from webapp.jobs.services import job_fail

log = logging.getLogger(__name__)


def _send(task_path: str, args: list[Any], task_id: str, job_id: int, queue: str | None) -> None:
    module_name, _, task_name = task_path.rpartition(".")
    try:
        task = getattr(import_module(module_name), task_name)
        options = {"queue": queue} if queue else {}
        task.apply_async(args=args, task_id=task_id, **options)
    except Exception as exc:  # noqa: BLE001 - any broker failure must show on the job
        log.exception("could not enqueue %s for job %s", task_path, job_id)
        job_fail(job_id=job_id, error=f"Could not reach the task queue: {exc}")


def job_enqueue_on_commit(
    *, job: Job, task_path: str, args: list[Any], queue: str | None = None
) -> None:
    """Record the Celery task id now; send the task only once the job row is committed.

    The task's path and arguments go into the job's params, so stale-job recovery can
    send it again without knowing what kind of job it is.
    """
    task_id = str(uuid.uuid4())
    job.params = {**job.params, "_task": {"path": task_path, "args": args, "queue": queue}}
    Job.objects.filter(pk=job.pk).update(celery_task_id=task_id, params=job.params)
    job.celery_task_id = task_id
    transaction.on_commit(lambda: _send(task_path, args, task_id, job.pk, queue))
