"""The serving path's wire: how the web side and `python -m workers.serve` talk through
Redis (settings.SERVING_URL). One place for the keys and the message shapes.

- Queue: the list `QUEUE` holds waiting requests as JSON (LPUSH here, RPOP there). A push
  past SERVE_QUEUE_MAX is refused atomically (a Lua script), so the bound holds across web
  processes; the serving process pops only while its batch has room, so the list's length
  is the real backlog.
- Events: each request has its own Redis stream `out:<id>` of JSON events (field `e`),
  added by the serving process: `{"t": "text", "text": delta}`, then one end,
  `{"t": "done", "finish_reason", "usage"}` or `{"t": "error", "code", "message"}`.
  A stream, not pub/sub: nothing is lost before the first read, and every reader (an API
  call, a playground page opened twice) reads it from its start.
- Cancel: the key `cancel:<id>`; the serving process reads the keys of its requests once
  a step and drops those set (a client that went away).

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

PREFIX = "tunebook:serve:"
QUEUE = PREFIX + "queue"
EVENTS_TTL_S = 10 * 60  # an answer nobody reads expires
QUEUE_TIMEOUT = "No server took the request in time (the serving queue is backed up); try again."
WAIT_S = 1  # longest blocking read: a stream sends a keep-alive at least this often
# LPUSH unless the queue already holds ARGV[1] requests; the new length, or -1 when full.
_PUSH_BOUNDED = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then return -1 end
return redis.call('LPUSH', KEYS[1], ARGV[2])
"""


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
def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def client() -> Any:
    return _client(settings.SERVING_URL)


def events_key(request_id: str) -> str:
    return f"{PREFIX}out:{request_id}"


def cancel_key(request_id: str) -> str:
    return f"{PREFIX}cancel:{request_id}"


def submit(request: ServeRequest) -> str:
    """Queue `request`; QueueFull when SERVE_QUEUE_MAX requests wait already."""
    request.deadline = time.time() + settings.SERVE_QUEUE_TIMEOUT_S
    raw = request.to_json()
    if client().eval(_PUSH_BOUNDED, 1, QUEUE, settings.SERVE_QUEUE_MAX, raw) == -1:
        raise QueueFull(settings.SERVE_RETRY_AFTER_S)
    return raw


def withdraw(raw: str) -> bool:
    """Take a request back off the queue; True if it was still waiting there."""
    return bool(client().lrem(QUEUE, 1, raw))


def cancel(request_id: str) -> None:
    client().set(cancel_key(request_id), 1, ex=EVENTS_TTL_S)


def events(
    request_id: str, deadline: float, *, queued: str | None = None
) -> Iterator[dict[str, Any] | None]:
    """The request's events from the first, until its end; None every WAIT_S with nothing
    new (a chance to send a keep-alive). Past `deadline` it ends with a timeout; past the
    queue deadline with the request still `queued` (its JSON, as submitted: the caller
    owns it) it takes the request back and ends with queue_timeout."""
    key, last = events_key(request_id), "0-0"
    queue_deadline = ServeRequest.from_json(queued).deadline if queued else None
    while True:
        reply = client().xread({key: last}, block=WAIT_S * 1000)
        for entry_id, fields in reply[0][1] if reply else []:
            last, event = entry_id, json.loads(fields[b"e"])
            yield event
            if event["t"] in ("done", "error"):
                return
        if reply:
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


def add_events(pipe: Any, request_id: str, events: list[dict[str, Any]]) -> None:
    """Queue `events` for `request_id` on a pipeline (the serving process's side)."""
    key = events_key(request_id)
    for event in events:
        pipe.xadd(key, {"e": json.dumps(event)})
    pipe.expire(key, EVENTS_TTL_S)


def error_event(code: str, message: str) -> dict[str, Any]:
    return {"t": "error", "code": code, "message": message}
