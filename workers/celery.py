"""The Celery app, configured from Django settings (CELERY_* names).

Run: celery -A workers worker -Q default        (CPU work: validation)
     celery -A workers worker -Q gpu -c 1       (one GPU job at a time)
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("tunebook")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    imports=("workers.tasks", "workers.api_chat"),
    task_queues=(Queue("default"), Queue("gpu")),
    task_default_queue="default",
    task_routes={
        "workers.tasks.validate_dataset_version": {"queue": "default"},
        "workers.tasks.run_cell": {"queue": "gpu"},
        "workers.tasks.select_final_adapter": {"queue": "default"},
        "workers.tasks.recover_stale_jobs": {"queue": "default"},
        "workers.api_chat.chat_completion": {"queue": "gpu"},
    },
    # Runs only where `celery beat` (or `worker -B`) runs; `manage.py jobs_recover` does the same.
    beat_schedule={
        "recover-stale-jobs": {"task": "workers.tasks.recover_stale_jobs", "schedule": 300.0}
    },
    # A task is acknowledged only when done, so a crashed worker's job is redelivered.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # Long GPU tasks: never let a worker reserve a second one while busy.
    worker_prefetch_multiplier=1,
    # Job state lives in the database; Celery results would be a second, stale copy.
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)
