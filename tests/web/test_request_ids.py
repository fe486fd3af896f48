"""A request's id (X-Request-ID) reaches the task it sends and the log lines of both."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client

from tests.web.conftest import CHAT_JSONL
from tests.web.test_finetune_worker import start_worker
from tests.web.worker_harness import Worker, wait_for
from webapp.api.keys import api_key_create
from webapp.core.logs import JsonFormatter, RequestIdFilter
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.jobs.dispatch import job_enqueue_on_commit
from webapp.jobs.models import Job

__all__ = ["start_worker"]  # the fixture


def upload(client: Client, key: str, **headers: str) -> Any:
    body = {"file": SimpleUploadedFile("chat.jsonl", CHAT_JSONL), "purpose": "fine-tune"}
    return client.post("/v1/files", body, HTTP_AUTHORIZATION=f"Bearer {key}", **headers)


def validation_job(response: Any) -> Job:
    version = DatasetVersion.objects.get(pk=int(response.json()["id"].removeprefix("file-")))
    return Job.objects.get(pk=version.validation_job_id)


def test_the_answer_names_the_id_and_the_job_keeps_it(db: None, team: Any, owner: Any) -> None:
    _, key = api_key_create(team=team, created_by=owner, name="ci")
    client = Client()
    sent = upload(client, key, HTTP_X_REQUEST_ID="trace-42")
    assert sent.status_code == 200 and sent["X-Request-ID"] == "trace-42"
    assert validation_job(sent).params["_task"]["request_id"] == "trace-42"
    # An id that could break a log line is replaced by one of ours; none given, one is made.
    forged = upload(client, key, HTTP_X_REQUEST_ID='x" \n{"level": "CRITICAL"}')
    made = upload(client, key)
    for answer in (forged, made):
        assert len(answer["X-Request-ID"]) == 32 and answer["X-Request-ID"].isalnum()
        assert validation_job(answer).params["_task"]["request_id"] == answer["X-Request-ID"]
    assert forged["X-Request-ID"] != made["X-Request-ID"]


def test_a_resend_outside_a_request_keeps_the_first_requests_id(
    db: None, team: Any, owner: Any
) -> None:
    _, key = api_key_create(team=team, created_by=owner, name="ci")
    job = validation_job(upload(Client(), key, HTTP_X_REQUEST_ID="first-1"))
    with transaction.atomic():  # as recovery does, from a task: no request around it
        job_enqueue_on_commit(job=job, task_path=job.params["_task"]["path"], args=[job.pk])
    job.refresh_from_db()
    assert job.params["_task"]["request_id"] == "first-1"


def test_web_log_lines_are_json_with_the_request_id(db: None) -> None:
    """The handler LOG_FORMAT=json configures (settings.LOGGING's filter and formatter),
    on Django's request logger, while a request is served."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        missing = Client().get("/no-such-page/", HTTP_X_REQUEST_ID="abc.123")
    finally:
        logger.removeHandler(handler)
    assert missing.status_code == 404 and missing["X-Request-ID"] == "abc.123"
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {"level": "WARNING", "request_id": "abc.123"}.items() <= lines[-1].items()
    assert "/no-such-page/" in lines[-1]["message"] and lines[-1]["time"].endswith("+00:00")


def test_the_worker_logs_json_under_the_id_of_the_request_that_sent_the_task(
    start_worker: Callable[..., Worker], team: Any, owner: Any, tmp_path: Path
) -> None:
    worker = start_worker(LOG_FORMAT="json")
    _, key = api_key_create(team=team, created_by=owner, name="ci")
    sent = upload(Client(), key, HTTP_X_REQUEST_ID="trace-77")
    version_id = int(sent.json()["id"].removeprefix("file-"))
    wait_for(
        lambda: DatasetVersion.objects.get(pk=version_id).status == VersionStatus.VALID,
        timeout=60,
        what="validation",
        worker=worker,
    )
    records = []
    for line in worker.tail(1_000_000).splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    ours = [r for r in records if r["request_id"] == "trace-77"]
    assert any(r["logger"] == "workers.celery" and "started" in r["message"] for r in ours), (
        worker.tail()
    )
    # Celery's own lines come through the same formatter, outside any request.
    assert any(r["logger"].startswith("celery") and r["request_id"] == "-" for r in records)
