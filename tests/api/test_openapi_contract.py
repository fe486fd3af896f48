"""The API contract is OpenAI's published OpenAPI document (tests/openapi/openapi.json).

conftest.py validates every /v1 response of every API test against it. These tests check
that validator: it must refuse what strictly typed clients refuse, and it must really see
the responses the other tests produce.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.contract import Record, violations
from tests.conftest import REPORT_ENV

ROOT = Path(__file__).resolve().parents[2]
FILE = {
    "id": "file-1",
    "object": "file",
    "bytes": 12,
    "created_at": 1700000000,
    "filename": "train.jsonl",
    "purpose": "fine-tune",
    "status": "processed",
}
CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "tiny-llama",
    "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
}
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "tiny-llama",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
}


def _json(method: str, path: str, body: object, status: int = 200) -> Record:
    return Record(method, path, status, "application/json", body=json.dumps(body).encode())


def _stream(*events: object) -> Record:
    chunks = [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]
    return Record("POST", "/v1/chat/completions", 200, "text/event-stream", chunks=chunks)


def test_well_formed_responses_pass() -> None:
    listing = {"object": "list", "data": [FILE], "has_more": False}
    for record, kind in [
        (_json("GET", "/v1/files/file-1", FILE), "object"),
        (_json("GET", "/v1/files", {**listing, "first_id": "file-1", "last_id": "file-1"}), "list"),
        (_json("POST", "/v1/chat/completions", COMPLETION), "object"),
        (_stream(CHUNK, CHUNK), "chunk"),
        (
            _json(
                "GET",
                "/v1/nope",
                {"error": {"message": "No.", "type": "x", "param": None, "code": None}},
                404,
            ),
            "error",
        ),  # fmt: skip
    ]:
        found, seen = violations(record)
        assert found == [] and seen[kind] >= 1, (record.path, found)


@pytest.mark.parametrize(
    ("record", "complaint"),
    [
        (_json("GET", "/v1/files/file-1", {**FILE, "expires_at": None}), "expires_at"),
        (_json("GET", "/v1/files/file-1", {**FILE, "status_details": None}), "status_details"),
        (_json("POST", "/v1/files", {k: v for k, v in FILE.items() if k != "bytes"}), "bytes"),
        (_json("GET", "/v1/files", {"object": "list", "data": [{**FILE, "bytes": "12"}]}), "bytes"),
        (
            _json("POST", "/v1/chat/completions", {**COMPLETION, "system_fingerprint": None}),
            "system_fingerprint",
        ),
        (_stream(CHUNK, {**CHUNK, "system_fingerprint": None}), "system_fingerprint"),
        (_stream({**CHUNK, "choices": [{"index": 0, "delta": {}}]}), "finish_reason"),
        (_json("GET", "/v1/models", {"error": {"message": "No."}}, 401), "type"),
        (_json("GET", "/v1/fine_tuning/jobs/ftjob-1", {"id": "ftjob-1"}), "FineTuningJob"),
        (_json("GET", "/v1/not/documented", {"id": "x"}), "no schema"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_broken_response_fails_validation(record: Record, complaint: str) -> None:
    found, _ = violations(record)
    assert found and complaint in "\n".join(found), found


def test_the_recording_sees_every_response_of_the_api_tests(tmp_path: Path) -> None:
    """A nested run of existing API tests: the conftest's recorder must have validated
    objects, lists, errors and stream chunks from them, all conforming."""
    report = tmp_path / "report.json"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")},
        REPORT_ENV: str(report),
        "DATA_DIR": str(tmp_path / "data"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/api/test_api_basics.py", "tests/api/test_query_counts.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    counts = json.loads(report.read_text())
    assert counts["object"] >= 20 and counts["list"] >= 20, counts
    assert counts["error"] >= 30 and counts["chunk"] >= 1, counts
