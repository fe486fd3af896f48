"""Live progress of an evaluation run: phase and counts into its Job, throttled, with a
cancellation check on every update (Cancelled unwinds the library call)."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from django.db import connection

from webapp.jobs.models import Job, JobStatus
from webapp.jobs.services import job_event_add, job_progress

WRITE_EVERY_S = 1.0
# The library's line per candidate, before it generates: "LABEL: X cached, Y to generate".
ANSWERS_LINE = re.compile(r": (\d+) cached, (\d+) to generate$")


class Cancelled(Exception):
    """The job was cancelled (or taken over): stop the library call."""


class Progress:
    """Phase + counts into the Job, throttled; thread-safe (endpoints answer in threads)."""

    def __init__(self, job_id: int, task_id: str, n_items: int, n_cands: int) -> None:
        self.job_id, self.task_id = job_id, task_id
        self.n_items, self.n_cands = n_items, n_cands
        self.answers_total = n_items * n_cands
        self.judgments_total = 0
        self.answers_done = self.judgments_done = self.seen_cands = 0
        self.phase = "answers"
        self.lock = threading.Lock()
        self.last = 0.0

    def message(self, text: str) -> None:
        """The library's progress line: "LABEL: X cached, Y to generate" or a phase name."""
        with self.lock:
            if "to generate" in text:
                m = ANSWERS_LINE.search(text)
                # Earlier candidates are done; this one's cached answers are done already.
                self.answers_done = self.seen_cands * self.n_items + (int(m[1]) if m else 0)
                self.seen_cands += 1
                self.phase = "answers"
            else:
                self.answers_done = self.answers_total
                self.phase = "judging" if "judg" in text or "grading" in text else "metrics"
        job_event_add(job=Job(pk=self.job_id), message=text[:500], data={"kind": "eval_phase"})
        self.report(force=True)

    def answered(self, n: int) -> None:
        """A batch of n answers finished (local candidates; the judge's own generations
        come later, in another phase, and are counted by judged())."""
        with self.lock:
            if self.phase != "answers":
                return
            self.answers_done = min(self.answers_done + n, self.seen_cands * self.n_items)
        self.report()

    def judged(self, n: int) -> None:
        with self.lock:
            self.judgments_done = min(self.judgments_done + n, self.judgments_total)
        self.report()

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < WRITE_EVERY_S:
            return
        self.last = now
        status, owner = (
            Job.objects.filter(pk=self.job_id).values_list("status", "celery_task_id").first()
        ) or (JobStatus.CANCELLED, "")
        if status != JobStatus.RUNNING or (owner and owner != self.task_id):
            raise Cancelled()
        count = f"{self.answers_done}/{self.answers_total} answers"
        if self.judgments_total:
            count += f", {self.judgments_done}/{self.judgments_total} judgments"
        job_progress(
            job_id=self.job_id,
            current=self.answers_done + self.judgments_done,
            total=self.answers_total + self.judgments_total,
            message=f"{self.phase}: {count}",
            metrics={
                "phase": self.phase,
                "answers_done": self.answers_done,
                "answers_total": self.answers_total,
                "judgments_done": self.judgments_done,
                "judgments_total": self.judgments_total,
            },
        )
        if threading.current_thread() is not threading.main_thread():
            connection.close()  # an endpoint's pool thread: don't leave a connection behind


def counting_pool(quantization: str, progress: Progress) -> Any:
    """A ModelPool whose models report each generated batch to `progress`, so the live
    view moves per answer rather than per candidate (no library change needed)."""
    from finetune_core.evaluate import ModelPool

    class CountingPool(ModelPool):
        def get(self, model: str, adapter: str | None = None) -> Any:
            chat = super().get(model, adapter)
            module = chat.model
            if not getattr(module, "_tunebook_counted", False):  # wrap each model once
                generate = module.generate

                def counted(*args: Any, **kwargs: Any) -> Any:
                    out = generate(*args, **kwargs)
                    ids = kwargs.get("input_ids", args[0] if args else None)
                    progress.answered(0 if ids is None else len(ids))
                    return out

                # An instance attribute: the module's class, forward and parameters untouched.
                module.generate = counted
                module._tunebook_counted = True
            return chat

    return CountingPool(quantization=quantization)
