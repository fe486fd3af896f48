"""OpenAI's published API contract, checked against the responses Tunebook really sends.

`Recorder` is a test-only middleware the API tests' conftest puts in front of every
response (test client and live server alike): it keeps each /v1 response, streamed chunks
included. `violations()` validates a recorded response against the schema that OpenAI's
OpenAPI document (tests/openapi/openapi.json) gives its operation and status.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs
from django.http import HttpRequest, HttpResponse

DOCUMENT = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"
SERVER_PREFIX = "/v1"
ERROR_SCHEMA = "#/components/schemas/ErrorResponse"
KINDS = ("object", "list", "error", "chunk")


@dataclass
class Record:
    method: str
    path: str
    status: int
    content_type: str
    body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)

    @property
    def streamed(self) -> bool:
        return self.content_type.startswith("text/event-stream")


RECORDS: list[Record] = []
COUNTS: Counter[str] = Counter()  # validated responses of each kind, for the whole session
_LOCK = threading.Lock()
# On only while an API test runs: other suites of the same session keep nothing.
RECORDING = threading.Event()


class Recorder:
    """Keeps every /v1 response; a stream is kept chunk by chunk as it goes out."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not RECORDING.is_set() or not request.path.startswith(SERVER_PREFIX + "/"):
            return response
        record = Record(
            request.method or "",
            request.path,
            response.status_code,
            response.get("Content-Type", ""),
        )
        if response.streaming:
            response.streaming_content = _tee(response.streaming_content, record)
        else:
            record.body = response.content
        with _LOCK:
            RECORDS.append(record)
        return response


def _tee(content: Iterable[bytes], record: Record) -> Iterator[bytes]:
    for chunk in content:
        record.chunks.append(bytes(chunk))
        yield chunk


def take_records() -> list[Record]:
    with _LOCK:
        taken = list(RECORDS)
        RECORDS.clear()
    return taken


# --- the document -----------------------------------------------------------------------


# Where OpenAI's document contradicts itself, the loaded copy follows OpenAI's own operations:
# (schema, property) -> the schema that property gets, and why.
ERRATA: dict[tuple[str, str], tuple[dict[str, Any], str]] = {
    ("FineTuningJob", "status"): (
        {
            "enum": [
                "validating_files",
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                "paused",
            ]
        },
        "its pause operation answers with a paused job, but the status enum lacks 'paused'",
    ),  # fmt: skip
    ("ListFilesResponse", "first_id"): (
        {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "an empty list has no first id, yet the document requires a string",
    ),
    ("ListFilesResponse", "last_id"): (
        {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "an empty list has no last id, yet the document requires a string",
    ),
}


@functools.cache
def document() -> dict[str, Any]:
    loaded = _as_2020_12(json.loads(DOCUMENT.read_text()))
    schemas = loaded["components"]["schemas"]
    for (name, prop), (schema, _why) in ERRATA.items():
        schemas[name]["properties"][prop] = schema
    return loaded


def _as_2020_12(node: Any) -> Any:
    """OpenAPI 3.0 keywords left in some schemas, in JSON Schema 2020-12 terms: a boolean
    exclusiveMinimum/-Maximum as a number, and `nullable: true` as "or null" (as OpenAI's own
    generated SDKs read it: stream chunks' `finish_reason` is required and nullable)."""
    if isinstance(node, list):
        return [_as_2020_12(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _as_2020_12(value) for key, value in node.items()}
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(exclusive), bool):
            flag = node.pop(exclusive)
            if flag and bound in node:
                node[exclusive] = node.pop(bound)
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


@functools.cache
def _operations() -> list[tuple[re.Pattern[str], dict[str, Any]]]:
    """Each documented path as a pattern; then, for a path ending in a parameter, the same
    path letting that parameter hold slashes (model ids may), tried only after all others."""
    strict, loose = [], []
    for template, item in document()["paths"].items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        strict.append((re.compile(f"^{pattern}$"), item))
        if template.endswith("}"):  # a last parameter like {model} may hold a slash
            loose.append((re.compile("^" + pattern.removesuffix("[^/]+") + ".+$"), item))
    return strict + loose


def response_schema(method: str, path: str, status: int, content_type: str) -> str | None:
    """The `$ref` of the schema OpenAI documents for this response, or None if it has none."""
    if status >= 400:
        return ERROR_SCHEMA
    local = path.removeprefix(SERVER_PREFIX)
    media = "text/event-stream" if content_type.startswith("text/event-stream") else None
    for pattern, item in _operations():
        operation = item.get(method.lower()) if pattern.match(local) else None
        if operation is None:
            continue
        content = operation["responses"].get(str(status), {}).get("content", {})
        return content.get(media or "application/json", {}).get("schema", {}).get("$ref")
    return None


@functools.cache
def validator(ref: str) -> jsonschema_rs.Draft202012Validator:
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": document()["components"],
        "$ref": ref,
    }
    return jsonschema_rs.Draft202012Validator(root)


def problems(ref: str, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.instance_path)) or '(top)'}: {e.message}"
        for e in validator(ref).iter_errors(instance)
    ]


# --- one recorded response ----------------------------------------------------------------


def _events(record: Record) -> list[Any]:
    """The JSON payloads of an event stream (its closing [DONE] is no JSON; a block that
    starts with ":" is a comment, such as a keep-alive)."""
    text = b"".join(record.chunks).decode()
    blocks = [block for block in text.split("\n\n") if block.strip()]
    payloads = [block.removeprefix("data: ") for block in blocks if not block.startswith(":")]
    return [json.loads(p) for p in payloads if p != "[DONE]"]


def kind_of(record: Record, payload: Any) -> str:
    # A stream reports a failure as an event holding only an error (a job's `error` is a field).
    if record.status >= 400 or (isinstance(payload, dict) and set(payload) == {"error"}):
        return "error"
    if record.streamed:
        return "chunk"
    return "list" if isinstance(payload, dict) and payload.get("object") == "list" else "object"


def violations(record: Record) -> tuple[list[str], Counter[str]]:
    """(what breaks the contract, how many payloads of each kind were validated)."""
    where = f"{record.method} {record.path} -> {record.status}"
    if "json" not in record.content_type and not record.streamed:
        return [], Counter()  # file content is the file's own bytes
    try:
        payloads = _events(record) if record.streamed else [json.loads(record.body)]
    except ValueError as exc:
        return [f"{where}: not JSON ({exc})"], Counter()
    found, seen = [], Counter()
    for payload in payloads:
        kind = kind_of(record, payload)
        status = 500 if kind == "error" else record.status
        ref = response_schema(record.method, record.path, status, record.content_type)
        if ref is None:
            found.append(f"{where}: OpenAI's document has no schema for this response")
            continue
        found += [f"{where} ({ref.rsplit('/', 1)[-1]}) {p}" for p in problems(ref, payload)]
        seen[kind] += 1
    return found, seen
