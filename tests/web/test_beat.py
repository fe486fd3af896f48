"""Celery beat's schedule, applied the way beat applies it: every entry must reach its queue.

Beat builds a ScheduleEntry per beat_schedule item and sends it with Scheduler.apply_async,
which turns any send error (such as a soft time limit above the hard one) into a
SchedulingError, logged and otherwise silent. Calling jobs_recover directly never sees that.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.web.worker_harness import run_with_sqlite_broker

APPLY_EVERY_ENTRY = """
import json, django
django.setup()
from celery.beat import ScheduleEntry, Scheduler
from kombu import Connection
from workers.celery import app
app.loader.import_default_modules()
scheduler = Scheduler(app, lazy=True)
entries = {}
for name, spec in app.conf.beat_schedule.items():
    entry = ScheduleEntry(name=name, app=app, **spec)
    scheduler.apply_async(entry)  # raises SchedulingError where beat would log it
    entries[name] = {"task": entry.task, "every_s": entry.schedule.run_every.total_seconds()}
received = []
with Connection(app.conf.broker_url) as conn:
    for queue in app.conf.task_queues:
        inbox = conn.SimpleQueue(queue.name)
        while True:
            try:
                message = inbox.get(timeout=1)
            except inbox.Empty:
                break
            received.append([message.headers["task"], message.headers.get("celery_beat_task")])
            message.ack()
print(json.dumps({"entries": entries, "received": received}))
"""


def _apply_beat_schedule(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_with_sqlite_broker(APPLY_EVERY_ENTRY, tmp_path, **env)


def test_beat_sends_every_scheduled_task(tmp_path: Path) -> None:
    done = _apply_beat_schedule(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    tasks = sorted(entry["task"] for entry in result["entries"].values())
    assert "workers.tasks.recover_stale_jobs" in tasks
    # Each entry's task arrived on a queue, marked as sent by beat.
    assert sorted(task for task, _ in result["received"]) == tasks
    assert all(from_beat for _, from_beat in result["received"])


def test_recovery_cadence_is_the_setting(tmp_path: Path) -> None:
    done = _apply_beat_schedule(tmp_path, JOB_RECOVER_EVERY_S="45")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["entries"]["recover-stale-jobs"]["every_s"] == 45.0
