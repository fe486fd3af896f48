"""Idempotency-Key, per-key rate limits, body size limits and pagination caps, on a live server."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import openai
import pytest
import requests
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django.utils import timezone

from webapp.api.idempotency import idempotent_request_purge_expired, request_fingerprint
from webapp.api.keys import api_key_create
from webapp.api.models import ApiKey, FineTuningJob, IdempotentRequest
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_mark
from webapp.projects.models import Project

GOOD = (
    b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}\n'
) * 3
ERROR_KEYS = {"message", "type", "param", "code"}


def _post(url: str, key: str, body: dict, **headers: str) -> requests.Response:
    return requests.post(
        url, json=body, headers={"Authorization": f"Bearer {key}", **headers}, timeout=30
    )


def test_idempotency_key_replays_the_first_job(live_server, sdk, owner_key, team, owner) -> None:
    client = sdk(owner_key)
    file_id = client.files.create(file=("t.jsonl", GOOD), purpose="fine-tune").id
    dataset_version_mark(version_id=int(file_id.split("-")[1]), status=VersionStatus.VALID)
    once = {"Idempotency-Key": "job-1"}
    first = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=file_id, extra_headers=once
    )
    again = client.fine_tuning.jobs.with_raw_response.create(
        model="tiny-llama", training_file=file_id, extra_headers=once
    )
    assert again.parse().id == first.id and again.headers["Idempotent-Replayed"] == "true"
    assert FineTuningJob.objects.count() == 1

    # The same key with another body: a 409 the SDK must not retry.
    raw = _post(
        f"{live_server.url}/v1/fine_tuning/jobs",
        owner_key,
        {"model": "tiny-llama", "training_file": file_id, "suffix": "other"},
        **once,
    )
    assert raw.status_code == 409 and set(raw.json()["error"]) == ERROR_KEYS
    assert raw.json()["error"]["code"] == "idempotency_key_reused"
    assert raw.headers["x-should-retry"] == "false"
    assert FineTuningJob.objects.count() == 1

    # Keys are per API key: another key with the same Idempotency-Key starts its own job.
    _, other_key = api_key_create(team=team, created_by=owner, name="second")
    second = sdk(other_key).fine_tuning.jobs.create(
        model="tiny-llama", training_file=file_id, extra_headers=once
    )
    assert second.id != first.id and FineTuningJob.objects.count() == 2

    # An error is not stored: fixing the request and retrying with the key runs it.
    bad = _post(
        f"{live_server.url}/v1/fine_tuning/jobs",
        owner_key,
        {"model": "nope"},
        **{"Idempotency-Key": "k2"},
    )
    assert bad.status_code == 400
    fixed = _post(
        f"{live_server.url}/v1/fine_tuning/jobs",
        owner_key,
        {"model": "tiny-llama", "training_file": file_id},
        **{"Idempotency-Key": "k2"},
    )
    assert fixed.status_code == 200 and FineTuningJob.objects.count() == 3

    # The same works on the native API, and for uploads (multipart) on /v1/.
    native = [
        _post(
            f"{live_server.url}/api/projects",
            owner_key,
            {"name": "Once"},
            **{"Idempotency-Key": "p"},
        )
        for _ in range(2)
    ]
    assert native[0].json() == native[1].json() and native[0].status_code == 201
    assert Project.objects.filter(name="Once").count() == 1
    uploads = [
        client.files.create(
            file=("u.jsonl", GOOD), purpose="fine-tune", extra_headers={"Idempotency-Key": "u"}
        )
        for _ in range(2)
    ]
    assert uploads[0].id == uploads[1].id
    assert DatasetVersion.objects.filter(original_name="u.jsonl").count() == 1

    # After 24 h the key is forgotten.
    IdempotentRequest.objects.update(created_at=timezone.now() - timedelta(hours=25))
    assert idempotent_request_purge_expired() >= 3
    assert not IdempotentRequest.objects.exists()
    later = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=file_id, extra_headers=once
    )
    assert later.id != first.id

    too_long = _post(
        f"{live_server.url}/api/projects",
        owner_key,
        {"name": "x"},
        **{"Idempotency-Key": "k" * 300},
    )
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "Idempotency-Key"


def test_rate_limit_is_per_key_with_retry_after(
    live_server, sdk, owner_key, team, owner, settings
) -> None:
    settings.API_RATE_LIMIT = 3
    settings.API_RATE_LIMIT_WINDOW_S = 60
    client = sdk(owner_key)
    for _ in range(3):
        client.models.list()
    with pytest.raises(openai.RateLimitError) as limited_sdk:
        client.models.list()
    exc = limited_sdk.value
    assert exc.status_code == 429 and exc.code == "rate_limit_exceeded"
    assert set(exc.body) == ERROR_KEYS and exc.body["type"] == "rate_limit_error"
    assert 1 <= int(exc.response.headers["Retry-After"]) <= 60
    assert exc.response.headers["x-ratelimit-remaining-requests"] == "0"
    # Another key has its own budget; the native API counts against the same one.
    _, other = api_key_create(team=team, created_by=owner, name="other")
    fresh = requests.get(
        f"{live_server.url}/api/teams", headers={"Authorization": f"Bearer {other}"}, timeout=30
    )
    assert fresh.status_code == 200 and fresh.headers["x-ratelimit-remaining-requests"] == "2"
    limited = requests.get(
        f"{live_server.url}/api/teams", headers={"Authorization": f"Bearer {owner_key}"}, timeout=30
    )
    assert limited.status_code == 429 and "Retry-After" in limited.headers
    # The schema and docs are not API calls.
    assert requests.get(f"{live_server.url}/api/schema/", timeout=30).status_code == 200


def test_body_size_and_pagination_caps(live_server, sdk, owner_key, settings) -> None:
    settings.API_MAX_BODY_BYTES = 2048
    big = _post(
        f"{live_server.url}/v1/chat/completions",
        owner_key,
        {"model": "tiny-llama", "messages": [{"role": "user", "content": "x" * 4000}]},
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert big.headers["x-should-retry"] == "false"
    native = _post(f"{live_server.url}/api/projects", owner_key, {"name": "y" * 3000})
    assert native.status_code == 413
    # /v1/ clamps `limit` to 100 as OpenAI does; /api/ refuses it (its schema says <= 100).
    client = sdk(owner_key)
    assert client.files.list(limit=1000).data == []
    refused = requests.get(
        f"{live_server.url}/api/projects?limit=101",
        headers={"Authorization": f"Bearer {owner_key}"},
        timeout=30,
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "limit"


def test_idempotent_retry_while_the_first_is_running(live_server, owner_key, settings) -> None:
    """No worker answers the chat, so the first request is still in flight for a while."""
    settings.API_CHAT_TIMEOUT_S = 3
    url = f"{live_server.url}/v1/chat/completions"
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]}
    first: dict[str, requests.Response] = {}
    thread = threading.Thread(
        target=lambda: first.setdefault(
            "r", _post(url, owner_key, body, **{"Idempotency-Key": "c"})
        )
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not IdempotentRequest.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    busy = _post(url, owner_key, body, **{"Idempotency-Key": "c"})
    assert (
        busy.status_code == 409
        and busy.json()["error"]["code"] == "idempotency_request_in_progress"
    )
    assert "x-should-retry" not in busy.headers  # retrying later can help
    thread.join()
    # The first timed out (504): nothing is kept, so the key is free for a new try.
    assert first["r"].status_code == 504 and not IdempotentRequest.objects.exists()


def test_nul_characters_are_refused_before_they_reach_the_database(
    live_server, owner_key, team
) -> None:
    base = f"{live_server.url}/api"
    nul = _post(f"{base}/projects", owner_key, {"name": "a\u0000b"})
    assert nul.status_code == 400 and "NUL" in nul.json()["error"]["message"]
    nested = _post(f"{base}/projects", owner_key, {"name": "ok", "description": "x\u0000"})
    assert nested.status_code == 400
    assert not Project.objects.filter(team=team).exists()
    # A literal backslash-u in the text is not a NUL and goes through.
    literal = _post(f"{base}/projects", owner_key, {"name": "path\\u0000"})
    assert literal.status_code == 201 and literal.json()["name"] == "path\\u0000"
    bad_key = _post(f"{base}/projects", owner_key, {"name": "k"}, **{"Idempotency-Key": "a\tb"})
    assert bad_key.status_code == 400 and bad_key.json()["error"]["param"] == "Idempotency-Key"


def test_a_key_left_in_progress_by_a_crash_is_freed_after_the_time_limit(
    team, owner, owner_key, dataset_version, settings
) -> None:
    """A process killed mid-request never finishes its Idempotency-Key row; after the
    request time limit, a retry runs instead of hearing "in progress" for 24 h."""
    settings.API_REQUEST_TIME_LIMIT_S = 300
    dataset_version_mark(version_id=dataset_version.pk, status=VersionStatus.VALID)
    path, once = "/v1/fine_tuning/jobs", {"HTTP_IDEMPOTENCY_KEY": "crash"}
    body = json.dumps({"model": "tiny-llama", "training_file": f"file-{dataset_version.pk}"})
    # What the crashed first request left behind: its row, never answered.
    sent = RequestFactory().post(path, data=body, content_type="application/json")
    key = ApiKey.objects.get(team=team)
    IdempotentRequest.objects.create(
        api_key=key, key="crash", method="POST", path=path, fingerprint=request_fingerprint(sent)
    )
    client = Client(HTTP_AUTHORIZATION=f"Bearer {owner_key}")

    def retry() -> HttpResponse:
        return client.post(path, data=body, content_type="application/json", **once)

    IdempotentRequest.objects.update(created_at=timezone.now() - timedelta(seconds=290))
    busy = retry()
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_request_in_progress"
    assert not FineTuningJob.objects.exists()

    IdempotentRequest.objects.update(created_at=timezone.now() - timedelta(seconds=310))
    ran = retry()
    assert ran.status_code == 200 and FineTuningJob.objects.count() == 1
    replayed = retry()  # the new answer is kept and replayed, as for any first request
    assert replayed.json()["id"] == ran.json()["id"] and replayed["Idempotent-Replayed"] == "true"
    assert FineTuningJob.objects.count() == 1


def test_rate_limit_buckets_are_chosen_after_authentication(
    team, owner, owner_key, settings
) -> None:
    """A key's budget is spent only by requests that prove the key; wrong keys, whatever
    prefix they show, share a small budget per address."""
    settings.API_RATE_LIMIT, settings.API_RATE_LIMIT_FAILED = 5, 3
    settings.API_RATE_LIMIT_WINDOW_S = 60
    client = Client()

    def get(key: str) -> HttpResponse:
        return client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}")

    forged = [owner_key[:11] + "x" * 40, "tb-aaaaaaaa-wrong", "tb-bbbbbbbb-wrong"]
    assert [get(key).status_code for key in forged] == [401, 401, 401]
    # The victim's prefix did not spend its budget: all 5 are left (4 after this one).
    ok = get(owner_key)
    assert ok.status_code == 200 and ok["x-ratelimit-remaining-requests"] == "4"
    # A fresh prefix does not buy a fresh budget: the address's failed budget is spent.
    refused = get("tb-cccccccc-wrong")
    assert refused.status_code == 429 and refused["x-ratelimit-limit-requests"] == "3"
    assert "missing or wrong API key" in refused.json()["error"]["message"]
    # ...while the real key, from the same address, keeps its own budget to the end.
    assert [get(owner_key).status_code for _ in range(5)] == [200, 200, 200, 200, 429]
    assert "for this key" in get(owner_key).json()["error"]["message"]
