"""The task queue as the web side sees it: one Celery app, tasks sent by name, one routing
table. The web process never imports `workers`: it names a task and the broker carries it
to whichever worker registered that name (`celery -A workers` uses this same app).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Celery
from kombu import Queue

log = logging.getLogger(__name__)

# Queues, by what their workers need: `default` for CPU work, `gpu` for training and models,
# `background` for model work no person waits on (it steps aside for one who does).
DEFAULT = "default"
GPU = "gpu"
BACKGROUND = "background"

# The queues one worker serves together (`make run` starts one worker per lane; a host
# serves whole lanes): CPU work alone, so a validation never waits behind a model job;
# a GPU worker takes background work, which makes way for a person's job on `gpu`.
LANES: tuple[tuple[str, ...], ...] = ((DEFAULT,), (GPU, BACKGROUND))

# Every task, by the name a worker registers it under.
VALIDATE_DATASET = "workers.tasks.validate_dataset_version"
RUN_CELL = "workers.tasks.run_cell"
SELECT_FINAL = "workers.tasks.select_final_adapter"
RECOVER_STALE_JOBS = "workers.tasks.recover_stale_jobs"
CHAT_COMPLETION = "workers.api_chat.chat_completion"
MAKE_TRANSFERABLE = "workers.transfer_keep.make_transferable"
EXPORT_RUN = "workers.export_run.export_run_task"

# Where each task runs unless its sender names a queue (a cell kind chooses its own).
ROUTES: dict[str, str] = {
    VALIDATE_DATASET: DEFAULT,
    RUN_CELL: GPU,
    SELECT_FINAL: DEFAULT,
    RECOVER_STALE_JOBS: DEFAULT,
    CHAT_COMPLETION: GPU,
    MAKE_TRANSFERABLE: BACKGROUND,
    EXPORT_RUN: GPU,  # loads the model (merge, GGUF), as a fine-tune does
}

app = Celery("tunebook")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=tuple(Queue(name) for name in sorted(set(ROUTES.values()))),
    task_default_queue=DEFAULT,
    task_routes={name: {"queue": queue} for name, queue in ROUTES.items()},
    # A task is acknowledged only when done, so a crashed worker's job is redelivered,
    # and a killed prefork child's task is handed out again by its parent. Every task
    # takes these (none sets its own); job_start bounds the redeliveries.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # Long GPU tasks: never let a worker reserve a second one while busy.
    worker_prefetch_multiplier=1,
    # Job state lives in the database; Celery results would be a second, stale copy.
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)


def lane_of(queue: str) -> tuple[str, ...]:
    """The queues served by the worker that serves `queue` (itself alone if in no lane)."""
    return next((lane for lane in LANES if queue in lane), (queue,))


def route(name: str, queue: str | None = None) -> str:
    """The queue a task goes to: the sender's choice, else the routing table's."""
    return queue or ROUTES[name]


def send(
    name: str, *, args: list[Any], task_id: str, queue: str | None = None, request_id: str = ""
) -> None:
    """Send a task by name to its queue (see route), with the request that caused it (a
    message header: the worker logs under it, workers/celery.py)."""
    headers = {"request_id": request_id} if request_id else None
    app.send_task(name, args=args, task_id=task_id, queue=route(name, queue), headers=headers)


def held_task_ids(queues: set[str]) -> set[str] | None:
    """Ids of the tasks the broker holds on `queues`: waiting, or delivered to a worker and
    not yet acknowledged. None when the broker cannot be read (then recovery assumes
    nothing is lost). Redis (the server broker) and SQLAlchemy (the embedded one)."""
    queues = sorted(queues)
    try:
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            if conn.transport.driver_type == "redis":
                return _redis_held(channel, queues)
            if conn.transport.driver_type == "sql":
                return _sql_held(channel, queues)
    except Exception:  # noqa: BLE001 - an unreadable broker must not stop recovery
        log.warning("could not read the broker's queues", exc_info=True)
    return None


def _task_id(message: dict[str, Any]) -> str:
    return str((message.get("headers") or {}).get("id") or "")


def _redis_held(channel: Any, queues: list[str]) -> set[str]:
    client = channel.client
    keys = [channel._q_for_pri(name, pri) for name in queues for pri in channel.priority_steps]
    waiting = [json.loads(raw) for key in dict.fromkeys(keys) for raw in client.lrange(key, 0, -1)]
    # kombu keeps each delivered, unacknowledged message as [message, exchange, routing key].
    delivered = [json.loads(raw)[0] for raw in client.hvals(channel.unacked_key)]
    return {_task_id(message) for message in waiting + delivered} - {""}


def _sql_held(channel: Any, queues: list[str]) -> set[str]:
    message, queue = channel.message_cls, channel.queue_cls
    rows = (
        channel.session.query(message.payload)
        .join(queue, message.queue_id == queue.id)
        .filter(queue.name.in_(queues), message.visible.is_(True))
    )
    return {_task_id(json.loads(payload)) for (payload,) in rows} - {""}
