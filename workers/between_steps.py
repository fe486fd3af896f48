"""A long job yields to a person between its steps. On a worker with one slot (the embedded
default: one solo worker per lane) a chat answer or a playground run sent while a
fine-tune trains would wait for the whole fine-tune. Instead the fine-tune, at the top of
each optimizer step (its should_stop check), answers what has waited longer than
INTERACTIVE_WAIT_S on a queue this worker serves, then goes on training. The answer's own
Celery message, delivered later, finds its job finished and does nothing.

Only on the Celery path: with the serving process (SERVING_URL) answers never queue here.
ANSWER_BETWEEN_STEPS=0 turns it off.
"""

from __future__ import annotations

import logging
import time

from celery import current_task
from django.conf import settings

from webapp.jobs import serving
from webapp.jobs.selectors import jobs_waiting
from workers.reporter import STOP_CHECK_EVERY_S

log = logging.getLogger(__name__)

CHAT = "api.chat"
PLAYGROUND = "cell.playground"


class BetweenSteps:
    """Called between a long job's steps (Reporter.should_stop) in the task's thread."""

    def __init__(self, task_id: str, queues: list[str]) -> None:
        self.task_id, self.queues, self.last = task_id, queues, 0.0
        request = getattr(current_task, "request", None)
        self.node = getattr(request, "hostname", None) or ""

    @classmethod
    def for_worker(cls, task_id: str) -> BetweenSteps | None:
        if not settings.ANSWER_BETWEEN_STEPS or serving.enabled():
            return None
        from workers.celery import app

        return cls(task_id, list(app.amqp.queues.consume_from))

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last < STOP_CHECK_EVERY_S:  # as the stop check: however short the steps
            return
        self.last = now
        waiting = jobs_waiting(
            queues=self.queues, kinds=(CHAT, PLAYGROUND), longer_than_s=settings.INTERACTIVE_WAIT_S
        )
        for job in waiting:
            try:
                self._answer(job.pk, job.kind)
            except Exception:  # noqa: BLE001 - an answer that fails must not stop the job
                log.exception("answering job %s between steps failed", job.pk)
            self.last = time.monotonic()

    def _answer(self, job_id: int, kind: str) -> None:
        from webapp.api.models import ChatCompletion
        from webapp.projects.models import CellRun
        from webapp.projects.run_lifecycle import cell_run_start
        from workers.api_chat import answer
        from workers.playground_run import run_playground

        log.info("answering %s job %s between the steps of %s", kind, job_id, self.task_id)
        task_id = f"{self.task_id}:between:{job_id}"
        if kind == CHAT:
            for completion_id in ChatCompletion.objects.filter(job_id=job_id).values_list(
                "pk", flat=True
            ):
                answer(completion_id, task_id=task_id, node=self.node)
            return
        for run_id in CellRun.objects.filter(job_id=job_id).values_list("pk", flat=True):
            run = cell_run_start(run_id=run_id, task_id=task_id)
            if run is not None and run.job_id is not None:
                run_playground(run, run.job_id, task_id)
