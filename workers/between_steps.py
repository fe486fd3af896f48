"""A long job yields to a person between its steps. On a worker with one slot (the embedded
default: one solo worker per lane) a chat answer or a playground run sent while a
fine-tune trains would wait for the whole fine-tune. Instead the fine-tune, at the top of
each optimizer step (its should_stop check), answers what has waited longer than
INTERACTIVE_WAIT_S on a queue this worker serves, then goes on training. The answer's own
Celery message, delivered later, finds its job finished and does nothing.

With the serving process (SERVING_URL) answers never queue here; they run in that process
beside the fine-tune. On a GPU both share the device. On a CPU they would fight for the
same cores (a chat 8 times slower, the fine-tune 3 times), so a CPU fine-tune waits
between its steps while the serving process on its host is busy (YieldToServing), at
most YIELD_MAX_S at a time, so that a stream of chats cannot starve it.
ANSWER_BETWEEN_STEPS=0 turns both off.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

from celery import current_task
from django.conf import settings

from webapp.jobs import serving
from webapp.jobs.selectors import jobs_waiting
from workers.db_retry import db_retrying
from workers.reporter import STOP_CHECK_EVERY_S

log = logging.getLogger(__name__)

CHAT = "api.chat"
PLAYGROUND = "cell.playground"
YIELD_MAX_S = 30  # the longest a fine-tune waits for the serving process at one step
YIELD_POLL_S = 0.1
# The TRAINING mark outlives a step by this many steps, within bounds: the serving process
# waits for a step in flight to end only while the mark says one may be running.
TRAINING_MARK_STEPS, TRAINING_MARK_S = 3, (2.0, 30.0)


def for_worker(task_id: str) -> Callable[[], None] | None:
    """What a fine-tune on this worker does between its steps so that people come first."""
    from workers import services_bridge

    if not settings.ANSWER_BETWEEN_STEPS:
        return None
    if not serving.enabled():
        return BetweenSteps.for_worker(task_id)
    return YieldToServing(socket.gethostname()) if services_bridge.device_kind() == "cpu" else None


class YieldToServing:
    """Marks `host` TRAINING for a few steps' time, then waits, marked PAUSED, while the
    serving process on it has requests in flight (its BUSY mark)."""

    def __init__(self, host: str) -> None:
        self.host, self.ended = host, 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.ended < YIELD_POLL_S:
            return
        low, high = TRAINING_MARK_S
        step_s = min(now - self.ended, high) if self.ended else high
        serving.mark(serving.TRAINING, self.host, max(low, TRAINING_MARK_STEPS * step_s))
        until = now + YIELD_MAX_S
        while serving.marked(serving.BUSY, self.host) and time.monotonic() < until:
            serving.mark(serving.PAUSED, self.host, 3 * YIELD_POLL_S)
            time.sleep(YIELD_POLL_S)
        self.ended = time.monotonic()
        if self.ended - now >= YIELD_POLL_S:
            log.info("waited %.1f s between steps for the serving process", self.ended - now)

    def finished(self) -> None:
        """Training is over: a new burst need not wait for a step (the mark's TTL would)."""
        serving.unmark(serving.TRAINING, self.host)


def finished(between: Callable[[], None] | None) -> None:
    """A fine-tune's steps are over (however they ended)."""
    if isinstance(between, YieldToServing):
        between.finished()


class BetweenSteps:
    """Called between a long job's steps (Reporter.should_stop) in the task's thread."""

    def __init__(self, task_id: str, queues: list[str]) -> None:
        self.task_id, self.queues, self.last = task_id, queues, 0.0
        request = getattr(current_task, "request", None)
        self.node = getattr(request, "hostname", None) or ""

    @classmethod
    def for_worker(cls, task_id: str) -> BetweenSteps:
        from workers.celery import app

        return cls(task_id, list(app.amqp.queues.consume_from))

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last < STOP_CHECK_EVERY_S:  # as the stop check: however short the steps
            return
        self.last = now
        # Retried like the reporter's own reads: a database restart delays the fine-tune.
        waiting = db_retrying(jobs_waiting)(
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
