"""/v1/chat/completions on a worker: one answer, its text flushed into the row as it grows.

Uses the same model cache as the playground, so a base model stays loaded between calls.
"""

from __future__ import annotations

import logging
import time

from celery import Task

from webapp.api.models import ChatCompletion
from webapp.api.v1.services import (
    chat_completion_fail,
    chat_completion_finish,
    chat_completion_grow,
    chat_completion_start,
)
from webapp.jobs import queue
from webapp.jobs.services import job_fail, job_start, job_succeed
from workers import services_bridge
from workers.celery import app

log = logging.getLogger(__name__)
FLUSH_EVERY_S = 0.1


class _Grow:
    def __init__(self, completion_id: int) -> None:
        self.completion_id, self.text, self.last = completion_id, "", 0.0

    def __call__(self, delta: str) -> None:
        self.text += delta
        if time.monotonic() - self.last >= FLUSH_EVERY_S:
            self.last = time.monotonic()
            chat_completion_grow(completion_id=self.completion_id, text=self.text)


@app.task(
    bind=True,
    name=queue.CHAT_COMPLETION,
    soft_time_limit=10 * 60,
    time_limit=11 * 60,
)
def chat_completion(self: Task, completion_id: int) -> None:
    answer(completion_id, task_id=self.request.id or "", node=self.request.hostname or "")


def answer(completion_id: int, *, task_id: str, node: str) -> None:
    """The answer, unless it was cancelled or answered already (by a long job on this
    worker, between its steps: workers/between_steps.py)."""
    row = ChatCompletion.objects.filter(pk=completion_id).first()
    if row is None or row.job_id is None:
        return
    if job_start(job_id=row.job_id, celery_task_id=task_id) is None:
        return  # cancelled or finished already
    chat_completion_start(completion_id=row.pk)
    started = time.monotonic()
    try:
        result = services_bridge.generate_one(
            model=row.base_model,
            adapter=row.adapter_dir or None,
            quantization=row.quantization,
            messages=row.messages,
            max_new_tokens=row.max_tokens,
            temperature=row.temperature,
            top_p=row.top_p,
            seed=row.seed,
            stop=row.stop,
            on_text=_Grow(row.pk),
        )
    except Exception as exc:  # noqa: BLE001 - every failure must land on the row
        user_error = services_bridge.is_user_error(exc)
        if not user_error:
            log.exception("chat completion %s failed", row.pk)
        message = str(exc) if user_error else f"{type(exc).__name__}: {exc}"
        chat_completion_fail(completion_id=row.pk, error=message)
        job_fail(job_id=row.job_id, error=message)
        return
    served = {"served_by": node, "generate_s": time.monotonic() - started}
    chat_completion_finish(completion_id=row.pk, result={**result, **served})
    job_succeed(job_id=row.job_id)
