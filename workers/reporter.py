"""The workers' one reporter: the engine's Hooks (finetune_core/contracts/hooks.py) as the
Job's bar and events, and its should_stop. Each kind passes `line`, a function from a
progress call to the Line the job shows; the Reporter owns the rest: the throttle (a line
waits WRITE_EVERY_S unless its key changed, it reached its total, or it says `force`),
the writes (job_progress, job_event_add, the run's outputs), retried through a database
restart; should_stop (cancelled, taken over by another delivery, or with `make_way` a
person's job waiting for this worker; asked at most every STOP_CHECK_EVERY_S, sticky);
thread safety, and a pool thread's database connection given back after each write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection

from finetune_core.contracts.hooks import Hooks
from webapp.jobs.models import EventLevel, Job, JobStatus
from webapp.jobs.selectors import person_job_waiting
from webapp.jobs.services import job_event_add, job_progress
from webapp.projects.models import CellRun
from webapp.projects.run_lifecycle import cell_run_progress
from workers.celery import app
from workers.db_retry import db_retrying

WRITE_EVERY_S = 1.0
STOP_CHECK_EVERY_S = 1.0

# A job event: (level, message, data).
Event = tuple[str, str, dict[str, Any]]


def event(message: str, data: dict[str, Any], level: str = EventLevel.INFO) -> Event:
    return level, message, data


@dataclass
class Line:
    """What one progress call shows: the job's bar, and the events written with it."""

    current: int
    total: int | None
    message: str
    metrics: dict[str, Any] | None = None
    key: str = ""  # a new key (phase, stage) is written at once
    events: Sequence[Event] = ()
    force: bool = False
    save: bool = False  # write the run's outputs too


LineOf = Callable[[str, int, int | None, dict[str, Any]], Line]
# Hooks.phase as a job event; it may update the kind's own state (called under the lock).
PhaseOf = Callable[[str, dict[str, Any]], Event]


class MakeWay:
    """should_stop for background work: a job a person started (a playground answer, a
    chat, a fine-tune, ...) has waited longer than INTERACTIVE_WAIT_S on a queue this
    worker serves, so this job steps aside (checked every STOP_CHECK_EVERY_S; with free
    workers elsewhere, the wait never gets that long). `waiting` is that job."""

    def __init__(self) -> None:
        self.last = 0.0
        self.waiting: Job | None = None

    def __call__(self) -> bool:
        now = time.monotonic()
        if self.waiting is None and now - self.last >= STOP_CHECK_EVERY_S:
            self.last = now
            # The queues of this worker's -Q: a job only another worker takes is no reason.
            served = list(app.amqp.queues.consume_from)
            wait = settings.INTERACTIVE_WAIT_S
            self.waiting = db_retrying(person_job_waiting)(queues=served, longer_than_s=wait)
        return self.waiting is not None


def _no_line(phase: str, current: int, total: int | None, info: dict[str, Any]) -> Line:
    return Line(current, total, phase, key=phase)


class Reporter:
    """One job's progress, events and stop check; `hooks()` gives them to the engine."""

    def __init__(
        self,
        job_id: int,
        task_id: str,
        *,
        line: LineOf = _no_line,
        phase: PhaseOf | None = None,
        run: CellRun | None = None,
        outputs: dict[str, Any] | None = None,
        make_way: bool = False,
        between: Callable[[], None] | None = None,
        every_s: float = WRITE_EVERY_S,
    ) -> None:
        self.job_id, self.task_id = job_id, task_id
        self.line, self.describe, self.every_s = line, phase, every_s
        self.run = run
        self.outputs: dict[str, Any] = outputs if outputs is not None else {}
        self.make_way = MakeWay() if make_way else None
        self.between = between  # run at each stop check: what a person waits for meanwhile
        self.lock = threading.Lock()
        self.last, self.key = 0.0, ""
        self.last_check, self.stopped = 0.0, False

    def hooks(self) -> Hooks:
        hooks = Hooks(progress=self.progress, should_stop=self.should_stop)
        if self.describe is not None:
            hooks.phase = self.phase
        return hooks

    def progress(self, phase: str, current: int, total: int | None, info: dict[str, Any]) -> None:
        """Hooks.progress: the kind's line, written when due."""
        with self.lock:
            line = self.line(phase, current, total, info)
            done = line.total is not None and line.current >= line.total
            due = line.force or done or line.key != self.key
            self.key = line.key
            if not due and time.monotonic() - self.last < self.every_s:
                return
            self.last = time.monotonic()
        self.write(line)

    def phase(self, name: str, info: dict[str, Any]) -> None:
        """Hooks.phase: a job event, and the next line is written at once."""
        assert self.describe is not None
        with self.lock:
            written = self.describe(name, info)
            self.last = 0.0
        db_retrying(self._add)([written])
        self._release()

    def should_stop(self) -> bool:
        """Cancelled, taken over by another delivery, or (make_way) asked to step aside."""
        if self.between is not None:
            self.between()
        return self.cancelled() or (self.make_way is not None and self.make_way())

    def cancelled(self) -> bool:
        """The job was cancelled, or another delivery of the task took it over."""
        now = time.monotonic()
        if not self.stopped and now - self.last_check >= STOP_CHECK_EVERY_S:
            self.last_check = now
            status, owner = self._job_state()
            self.stopped = status != JobStatus.RUNNING or bool(owner and owner != self.task_id)
            self._release()
        return self.stopped

    def write(self, line: Line) -> None:
        """Write `line` now, past the throttle."""
        self._write(line)
        self._release()

    def save(self) -> None:
        """Write the run's outputs now (the next line waits for the throttle)."""
        self.last = time.monotonic()
        self._save()
        self._release()

    @db_retrying  # a database restart mid-run delays these writes; it loses none of them
    def _write(self, line: Line) -> None:
        if line.save:
            self._save()
        job_progress(
            job_id=self.job_id,
            current=line.current,
            total=line.total,
            message=line.message,
            metrics=line.metrics,
        )
        self._add(line.events)

    def _save(self) -> None:
        assert self.run is not None, "a Reporter without a run has no outputs to save"
        cell_run_progress(run=self.run, outputs=self.outputs)

    def _add(self, events: Sequence[Event]) -> None:
        job = Job(pk=self.job_id)
        for level, message, data in events:
            job_event_add(job=job, level=level, message=message, data=data)

    @db_retrying
    def _job_state(self) -> tuple[str, str]:
        row = Job.objects.filter(pk=self.job_id).values_list("status", "celery_task_id")
        return row.first() or (JobStatus.CANCELLED, "")

    @staticmethod
    def _release() -> None:
        if threading.current_thread() is not threading.main_thread():
            connection.close()  # an endpoint's pool thread: don't leave a connection behind
