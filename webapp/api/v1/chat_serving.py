"""/v1/chat/completions on the serving path (settings.SERVING_URL set): the request goes
to `python -m workers.serve` through Redis and its text comes back the same way
(webapp/jobs/serving.py); the database gets the record, and the serving process writes
the outcome into it once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

from webapp.api.auth import Caller
from webapp.api.errors import ApiError, error_response
from webapp.api.models import ChatCompletion
from webapp.api.v1.chat_sse import KEEP_ALIVE, Chunks, completion_object
from webapp.api.v1.render import epoch
from webapp.api.v1.services import chat_completion_create, chat_completion_fail
from webapp.jobs import serving

# An error event's code: the HTTP status a non-streamed answer gets.
STATUS = {"queue_timeout": 503, "timeout": 504, "user_error": 400}


def respond(
    caller: Caller,
    model: str,
    target: dict[str, str],
    messages: list[dict[str, str]],
    *,
    stream: bool,
    include_usage: bool,
    **sampling: Any,
) -> HttpResponse:
    row = chat_completion_create(
        team=caller.team, created_by=caller.user, model=model, target=target,
        messages=messages, serving=True, **sampling,
    )  # fmt: skip
    request = serving.ServeRequest(
        model=target["base_model"], quantization=target.get("quantization") or "nf4",
        adapter=target.get("adapter_dir") or "", messages=messages, completion_id=row.pk,
        id=f"chatcmpl-{row.pk}", **sampling,
    )  # fmt: skip
    try:
        raw = serving.submit(request)
    except serving.QueueFull as exc:
        chat_completion_fail(completion_id=row.pk, error="Refused: the serving queue was full.")
        response = error_response(429, str(exc), code="server_busy")
        response["Retry-After"] = str(exc.retry_after)
        return response
    deadline = time.monotonic() + settings.API_CHAT_TIMEOUT_S
    if stream:
        response = StreamingHttpResponse(
            _stream(row, raw, deadline, include_usage), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    return _whole(row, raw, deadline)


def _settle_withdrawn(row: ChatCompletion, event: dict[str, Any]) -> None:
    """The outcomes the serving process may never write: the request left its queue unread,
    or no answer came in time (the serving process may be gone; if it is not, it ends the
    request as cancelled and writes that)."""
    if event.get("withdrawn"):
        chat_completion_fail(completion_id=row.pk, error=event["message"])
    elif event["code"] == "timeout":
        chat_completion_fail(completion_id=row.pk, error=event["message"], unless_settled=True)


def _stream(row: ChatCompletion, raw: str, deadline: float, include_usage: bool) -> Iterator[bytes]:
    chunks = Chunks(f"chatcmpl-{row.pk}", epoch(row.created_at), row.model)
    finished = False
    try:
        yield chunks.start()
        for event in serving.events(f"chatcmpl-{row.pk}", deadline, queued=raw):
            if event is None:
                yield KEEP_ALIVE  # a client that went away fails this write
            elif event["t"] == "text":
                yield chunks.chunk({"content": event["text"]})
            elif event["t"] == "done":
                finished = True
                yield from chunks.end(event["finish_reason"], event["usage"], include_usage)
            else:
                finished = True
                _settle_withdrawn(row, event)
                status = STATUS.get(event["code"], 500)
                yield from chunks.error(event["message"], status=status, code=event["code"])
    finally:
        if not finished:  # the client disconnected: its request leaves at the next step
            serving.cancel(f"chatcmpl-{row.pk}")


def _whole(row: ChatCompletion, raw: str, deadline: float) -> HttpResponse:
    text = []
    for event in serving.events(f"chatcmpl-{row.pk}", deadline, queued=raw):
        if event is None:
            continue
        if event["t"] == "text":
            text.append(event["text"])
        elif event["t"] == "done":
            body = completion_object(
                f"chatcmpl-{row.pk}", epoch(row.created_at), row.model, "".join(text),
                event["finish_reason"], event["usage"],
            )  # fmt: skip
            return JsonResponse(body)
        else:
            _settle_withdrawn(row, event)
            raise ApiError(STATUS.get(event["code"], 500), event["message"], code=event["code"])
    raise ApiError(500, "The answer ended without an outcome.", code="generation_failed")
