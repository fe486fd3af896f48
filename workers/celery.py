"""The Celery app, configured from Django settings (CELERY_* names).

Run: celery -A workers worker -Q default                 (CPU work: validation)
     celery -A workers worker -Q gpu,background -c 1     (one GPU job at a time)
     python -m workers.embedded                          (both, as `make run`)
"""

from __future__ import annotations

import logging
import logging.config
import os

from celery import Task, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

from django.conf import settings  # noqa: E402 - the settings module must be named first

from webapp.core.request_id import bound  # noqa: E402
from webapp.jobs import queue  # noqa: E402
from webapp.jobs.queue import app  # noqa: E402
from workers import base_models  # noqa: E402

__all__ = ["app"]
log = logging.getLogger(__name__)

# One app for senders and workers: its queues and routes are webapp.jobs.queue's table.
app.conf.update(
    # Every module that registers a task, so a worker knows every name the web side sends,
    # and the one that announces the worker (ops.WorkerHost).
    imports=(
        "workers.tasks",
        "workers.api_chat",
        "workers.transfer_keep",
        "workers.export_run",
        "workers.announce",
    ),
    # Runs only where `celery beat` (or `worker -B`) runs; `manage.py jobs_recover` does the same.
    beat_schedule={
        "recover-stale-jobs": {
            "task": queue.RECOVER_STALE_JOBS,
            "schedule": float(settings.JOB_RECOVER_EVERY_S),
        }
    },
)


@signals.worker_init.connect
def resolve_registered_models(**kwargs: object) -> None:
    """A worker's engine resolves registered models' names through their records; only a
    worker does, so a process that merely imports the app never reads the database there."""
    base_models.install()


@signals.worker_init.connect
def refuse_unreachable_storage(**kwargs: object) -> None:
    """A worker whose object store does not answer stops at start, saying why, instead of
    taking jobs it cannot save (the web side runs the same check as a Django system check)."""
    from webapp.core.storage import unreachable

    if problems := unreachable():
        raise SystemExit("cannot start: " + "; ".join(problems))


@signals.task_prerun.connect
def log_under_the_request(task: Task, **kwargs: object) -> None:
    """A task logs under the id of the web request that sent it (webapp.core.request_id),
    carried as a message header; task_postrun puts the worker's own context back."""
    request_id = getattr(task.request, "request_id", None) or "-"
    task.request.request_id_binding = bound(request_id)
    task.request.request_id_binding.__enter__()
    log.info("task %s started (job args %s)", task.name, list(task.request.args or ())[:3])


@signals.task_postrun.connect
def forget_the_request(task: Task, **kwargs: object) -> None:
    binding = getattr(task.request, "request_id_binding", None)
    if binding is not None:
        binding.__exit__(None, None, None)


def _json_logging(**kwargs: object) -> None:
    """LOG_FORMAT=json: the worker logs through Django's LOGGING (JSON lines, request ids)
    instead of Celery's own format."""
    logging.config.dictConfig(settings.LOGGING)


if settings.LOG_FORMAT == "json":  # any receiver at all stops Celery configuring its own
    signals.setup_logging.connect(_json_logging)
