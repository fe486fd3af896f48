"""The serving path's wire: how the web side and `python -m workers.serve` talk, through
Redis or, in the embedded default, an SQLite file (settings.SERVING_URL; the transports
are webapp/jobs/serving_wire.py). One place for the operations and the message shapes.

- Queue: waiting requests as JSON, first in first out. A push past SERVE_QUEUE_MAX is
  refused atomically, so the bound holds across web processes; the serving process takes
  only while its batch has room, so the queue's length is the real backlog.
- Events: each request has its own ordered log of JSON events, added by the serving
  process: `{"t": "text", "text": delta}`, then one end,
  `{"t": "done", "finish_reason", "usage"}` or `{"t": "error", "code", "message"}`.
  Nothing is lost before the first read, and every reader (an API call, a playground page
  opened twice) reads it from its start.
- Cancel: a mark per request; the serving process reads its requests' marks once a step
  and drops those set (a client that went away).
- Marks per host, each with a TTL, so that a CPU fine-tune and the serving process on one
  host take turns (workers/between_steps.py): BUSY while the serving process has work (the
  fine-tune waits between its optimizer steps until it clears); TRAINING while a CPU
  fine-tune steps, PAUSED while it waits (the serving process starts a new burst once
  the step in flight has ended, since sharing two cores slows both several times).

A request is never silently lost: it ends with "done" or "error", or, when nobody took it
off the queue before its deadline, the waiting side removes it and says so (queue_timeout).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

from django.conf import settings

from webapp.jobs.serving_wire import EVENTS_TTL_S, Event, Wire, connect

QUEUE_TIMEOUT = "No server took the request in time (the serving queue is backed up); try again."
WAIT_S = 1  # longest blocking read: a stream sends a keep-alive at least this often
BUSY, TRAINING, PAUSED = "busy", "training", "paused"  # the marks' kinds
BUSY_TTL_S = 1  # a busy mark outlives its last refresh by this (a serving process that died)


class QueueFull(Exception):
    """The serving queue is at its bound: try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("The server is busy; try again shortly.")
        self.retry_after = retry_after


@dataclass
class ServeRequest:
    """One answer to generate: what the serving process needs, and where it reports."""

    model: str  # the base model's catalog name
    messages: list[dict[str, str]]
    quantization: str = "nf4"
    adapter: str = ""  # storage key of a LoRA adapter folder; "" for the base model
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    completion_id: int | None = None  # the ChatCompletion row it settles, if any
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    deadline: float = 0.0  # epoch seconds: not started by then, it fails (queue_timeout)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> ServeRequest:
        return cls(**json.loads(raw))


def enabled() -> bool:
    return bool(settings.SERVING_URL)


@cache
def _wire(url: str) -> Wire:
    return connect(url)


def wire() -> Wire:
    return _wire(settings.SERVING_URL)


def submit(request: ServeRequest) -> str:
    """Queue `request`; QueueFull when SERVE_QUEUE_MAX requests wait already."""
    request.deadline = time.time() + settings.SERVE_QUEUE_TIMEOUT_S
    raw = request.to_json()
    if not wire().push(raw, settings.SERVE_QUEUE_MAX):
        raise QueueFull(settings.SERVE_RETRY_AFTER_S)
    return raw


def withdraw(raw: str) -> bool:
    """Take a request back off the queue; True if it was still waiting there."""
    return wire().remove(raw)


def cancel(request_id: str) -> None:
    wire().flag("cancel", request_id, EVENTS_TTL_S)


def cancelled(request_ids: list[str]) -> list[bool]:
    return wire().flagged("cancel", request_ids)


def mark(kind: str, host: str, ttl_s: float) -> None:
    wire().flag(kind, host, ttl_s)


def unmark(kind: str, host: str) -> None:
    wire().unflag(kind, host)


def marked(kind: str, host: str) -> bool:
    return wire().flagged(kind, [host])[0]


def events(
    request_id: str, deadline: float, *, queued: str | None = None
) -> Iterator[dict[str, Any] | None]:
    """The request's events from the first, until its end; None every WAIT_S with nothing
    new (a chance to send a keep-alive). Past `deadline` it ends with a timeout; past the
    queue deadline with the request still `queued` (its JSON, as submitted: the caller
    owns it) it takes the request back and ends with queue_timeout."""
    last = ""
    queue_deadline = ServeRequest.from_json(queued).deadline if queued else None
    while True:
        batch = wire().read(request_id, last, WAIT_S)
        for last, event in batch:  # noqa: B007 - `last` is the cursor the next read starts at
            yield event
            if event["t"] in ("done", "error"):
                return
        if batch:
            continue
        if queue_deadline and time.time() > queue_deadline and withdraw(queued or ""):
            yield {**error_event("queue_timeout", QUEUE_TIMEOUT), "withdrawn": True}
            return
        if time.monotonic() > deadline:
            if queued:
                cancel(request_id)
            yield error_event("timeout", "Generation timed out; try again.")
            return
        yield None


def publish(events: dict[str, list[Event]]) -> None:
    """Add each request's new events (the serving process's side), in one round trip."""
    wire().publish(events)


def error_event(code: str, message: str) -> dict[str, Any]:
    return {"t": "error", "code": code, "message": message}
