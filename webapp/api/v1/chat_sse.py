"""OpenAI's chat completion shapes, streamed (SSE chunks) or whole, for both paths: the
Celery one (a row followed in the database) and the serving one (events from Redis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from webapp.api.errors import error_body


def sse(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {text}\n\n".encode()


KEEP_ALIVE = b": keep-alive\n\n"  # an SSE comment: clients ignore it; a gone client fails it


def finish_reason(reason: str) -> str:
    """OpenAI knows "stop" and "length" here; a stop string or end of turn is "stop"."""
    return "length" if reason == "length" else "stop"


class Chunks:
    """The chunks of one streamed completion."""

    def __init__(self, completion_id: str, created: int | None, model: str) -> None:
        self.base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }

    def chunk(self, delta: dict[str, str], finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**self.base, "choices": [choice], **extra})

    def start(self) -> bytes:
        return self.chunk({"role": "assistant", "content": ""})

    def end(self, reason: str, usage: dict[str, int], include_usage: bool) -> Iterator[bytes]:
        yield self.chunk({}, finish_reason(reason), usage=None if include_usage else usage)
        if include_usage:
            yield sse({**self.base, "choices": [], "usage": usage})
        yield sse("[DONE]")

    def error(self, message: str, *, status: int, code: str | None = None) -> Iterator[bytes]:
        yield sse(error_body(message, status=status, code=code))
        yield sse("[DONE]")


def completion_object(
    completion_id: str, created: int | None, model: str, text: str, reason: str, usage: dict
) -> dict[str, Any]:
    message = {"role": "assistant", "content": text, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{**choice, "finish_reason": finish_reason(reason)}],
        "usage": usage,
    }
