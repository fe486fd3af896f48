"""Live progress of an evaluation run: the engine's Hooks (finetune_core.contracts.hooks)
as the Job's phase events and counts, throttled; should_stop is the job's status check
(the fine-tune's StopCheck), so a cancel ends the library call with Stopped."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db import connection

from finetune_core.contracts.hooks import Hooks
from webapp.jobs.models import Job
from webapp.jobs.services import job_event_add, job_progress
from workers.finetune_run import StopCheck

WRITE_EVERY_S = 1.0


def describe(name: str, info: dict[str, Any]) -> str:
    """A phase as the run page's event line."""
    if name == "answers":
        return f"{info['candidate']}: {info['cached']} cached, {info['uncached']} to generate"
    if name in ("judging", "grading"):
        what = "judging pairs in both orders" if name == "judging" else "grading answers"
        return f"{what}: {info['judgments']} judgments"
    return "reference metrics" if name == "metrics" else name


class Progress:
    """Phase + counts into the Job, throttled; thread-safe (endpoints answer in threads).

    The totals start as the runner's expectation, so the bar never moves backwards, and
    become the engine's own counts as each phase starts."""

    def __init__(self, job_id: int, task_id: str, answers: int, judgments: int) -> None:
        self.job_id = job_id
        self.stop_check = StopCheck(job_id, task_id)
        self.answers_total, self.judgments_total = answers, judgments
        self.answers_done = self.judgments_done = 0
        self.judged_before = 0  # judgments of an earlier judging phase
        self.phase = "answers"
        self.lock = threading.Lock()
        self.last = 0.0

    def hooks(self) -> Hooks:
        return Hooks(progress=self.progress, should_stop=self.should_stop, phase=self.start)

    def start(self, name: str, info: dict[str, Any]) -> None:
        """Hooks.phase: a job event, and the next count is written at once."""
        with self.lock:
            self.phase, self.last = name, 0.0
            if name in ("judging", "grading"):
                self.judged_before = self.judgments_done
                self.judgments_total = self.judged_before + info["judgments"]
        job_event_add(
            job=Job(pk=self.job_id),
            message=describe(name, info)[:500],
            data={"kind": "eval_phase", "phase": name, **info},
        )
        self._release()

    def progress(self, phase: str, current: int, total: int | None, info: dict[str, Any]) -> None:
        """Hooks.progress: answers over all candidates, or judgments of this phase."""
        with self.lock:
            if phase == "answers":
                self.answers_done, self.answers_total = current, total or self.answers_total
            else:
                self.judgments_done = self.judged_before + current
        self.report()

    def should_stop(self) -> bool:
        stop = self.stop_check()
        self._release()
        return stop

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < WRITE_EVERY_S:
            return
        self.last = now
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
        self._release()

    @staticmethod
    def _release() -> None:
        if threading.current_thread() is not threading.main_thread():
            connection.close()  # an endpoint's pool thread: don't leave a connection behind
