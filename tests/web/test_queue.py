"""Tasks go by name through one routing table: the web process sends every kind of task
without importing `workers` or torch, and the workers register every name it sends."""

from __future__ import annotations

import json
from pathlib import Path

from tests.web.worker_harness import run_with_sqlite_broker
from webapp.jobs import queue

SEND_EVERY_TASK = """
import json, sys, uuid, django
django.setup()
from kombu import Connection
from webapp.jobs import queue
for name in queue.ROUTES:
    queue.send(name, args=[1], task_id=str(uuid.uuid4()))
loaded = [m for m in ("torch", "transformers", "workers") if m in sys.modules]
received = {}
with Connection(queue.app.conf.broker_url) as conn:
    for name in set(queue.ROUTES.values()):
        inbox = conn.SimpleQueue(name)
        while True:
            try:
                message = inbox.get(timeout=1)
            except inbox.Empty:
                break
            received.setdefault(name, []).append(message.headers["task"])
            message.ack()
print(json.dumps({"loaded": loaded, "received": received}))
"""


def test_web_process_sends_every_task_by_name_to_its_queue(tmp_path: Path) -> None:
    done = run_with_sqlite_broker(SEND_EVERY_TASK, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    expected: dict[str, list[str]] = {}
    for name, routed in queue.ROUTES.items():
        expected.setdefault(routed, []).append(name)
    assert {k: sorted(v) for k, v in result["received"].items()} == {
        k: sorted(v) for k, v in expected.items()
    }


def test_workers_register_every_routed_task() -> None:
    from workers.celery import app

    app.loader.import_default_modules()
    assert set(queue.ROUTES) <= set(app.tasks)
    assert app is queue.app  # senders and workers share one configuration
