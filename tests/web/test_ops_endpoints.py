"""/healthz, /readyz and /metrics against the real database, brokers and storage."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.web.worker_harness import broker, database_url, worker_broker_url
from webapp.jobs.models import JobStatus
from webapp.projects.run_lifecycle import cell_run_settle, cell_run_start

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # free once closed: nothing listens there


def test_healthz_answers_without_the_database() -> None:
    page = Client().get("/healthz")  # no db fixture: a query here would raise
    assert page.status_code == 200 and page.json() == {"status": "ok"}


def test_readyz_is_ready_when_everything_answers(db, tmp_path: Path, settings) -> None:
    with broker(worker_broker_url(tmp_path)):
        page = Client().get("/readyz")
    assert page.status_code == 200, page.content
    assert page.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    assert not any(Path(settings.MEDIA_ROOT, "readyz").iterdir())  # the probe file is gone


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_readyz_names_an_unreachable_broker(db, scheme: str) -> None:
    started = time.monotonic()
    with broker(f"{scheme}://127.0.0.1:{_closed_port()}/0"):
        page = Client().get("/readyz")
    assert time.monotonic() - started < 15  # a probe, not a hang
    assert page.status_code == 503
    body = page.json()
    assert body["status"] == "unavailable" and body["failed"] == ["broker"]
    assert body["checks"]["database"] == "ok" and body["checks"]["storage"] == "ok"


def test_readyz_names_unwritable_storage(db, tmp_path: Path, settings) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the media folder should be")
    settings.MEDIA_ROOT = str(blocker)
    with broker(worker_broker_url(tmp_path)):
        page = Client().get("/readyz")
    assert page.status_code == 503
    assert page.json()["failed"] == ["storage"]
    assert str(tmp_path) not in page.content.decode()  # no server path for the public


def _scrape(client: Client | None = None, **headers: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one /metrics scrape, parsed by
    prometheus_client's own parser."""
    page = (client or Client()).get("/metrics", **headers)
    assert page.status_code == 200, page.content
    assert page["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(page.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_are_for_localhost_without_a_token(db, settings) -> None:
    settings.METRICS_TOKEN = ""
    refused = Client(REMOTE_ADDR="203.0.113.9").get("/metrics")
    assert refused.status_code == 403 and b"METRICS_TOKEN" in refused.content
    assert ("tunebook_jobs", (("status", "queued"),)) in _scrape()  # from 127.0.0.1


def test_metrics_need_the_bearer_token_when_one_is_set(db, settings) -> None:
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    remote = Client(REMOTE_ADDR="203.0.113.9")
    for header in ("", "Bearer wrong", "Basic s3cret-scrape-token"):
        page = remote.get("/metrics", HTTP_AUTHORIZATION=header)
        assert page.status_code == 401 and page["WWW-Authenticate"].startswith("Bearer")
    assert Client().get("/metrics").status_code == 401  # localhost too, once a token is set
    assert _scrape(remote, HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")


def test_request_latency_counts_each_answered_view(db) -> None:
    key = ("tunebook_request_duration_seconds_count", (("view", "healthz"),))
    before = _scrape().get(key, 0)
    Client().get("/healthz")
    Client().get("/healthz")
    after = _scrape()
    assert after[key] == before + 2
    bucket = ("tunebook_request_duration_seconds_bucket", (("le", "+Inf"), ("view", "healthz")))
    assert after[bucket] == after[key]


def test_job_metrics_follow_a_fine_tune_run(cell_run) -> None:
    def jobs(status: str, samples: dict) -> float:
        return samples[("tunebook_jobs", (("status", status),))]

    queued = _scrape()  # the fine-tune's job and its dataset's validation job
    assert jobs(JobStatus.QUEUED, queued) == 2 and jobs(JobStatus.RUNNING, queued) == 0
    assert queued[("tunebook_queue_depth", (("queue", "gpu"),))] == 1
    assert queued[("tunebook_queue_depth", (("queue", "default"),))] == 1
    assert queued[("tunebook_jobs_active", ())] == 0
    assert queued[("tunebook_trained_tokens_total", ())] == 0

    run = cell_run_start(run_id=cell_run.pk, task_id="task-1")
    running = _scrape()
    assert jobs(JobStatus.QUEUED, running) == 1 and jobs(JobStatus.RUNNING, running) == 1
    assert running[("tunebook_queue_depth", (("queue", "gpu"),))] == 0
    assert running[("tunebook_jobs_active", ())] == 1
    age = running[("tunebook_job_heartbeat_age_seconds", (("which", "newest"),))]
    assert 0 <= age < 60

    cell_run_settle(run=run, outcome="succeeded", outputs={"trained_tokens": 6000})
    done = _scrape()
    assert jobs(JobStatus.RUNNING, done) == 0 and jobs(JobStatus.SUCCEEDED, done) == 1
    assert done[("tunebook_trained_tokens_total", ())] == 6000
    assert done[("tunebook_trained_tokens_per_minute", ())] == 100  # 6000 in the last hour
    assert ("tunebook_job_heartbeat_age_seconds", (("which", "newest"),)) not in done


SERVE_TWO_REQUESTS = """
import django
django.setup()
from django.test.utils import setup_test_environment
setup_test_environment()
from django.test import Client
assert Client().get("/healthz").status_code == 200
assert Client().get("/healthz").status_code == 200
"""

SCRAPE_LATENCY = """
import django
django.setup()
from webapp.ops.metrics import exposition
from prometheus_client.parser import text_string_to_metric_families
text = exposition().decode()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        if s.name == "tunebook_request_duration_seconds_count" and s.labels["view"] == "healthz":
            print(int(s.value))
"""


def test_latency_sums_over_web_processes_in_multiprocess_mode(db, tmp_path: Path) -> None:
    """Two gunicorn-like processes answer; a third one's scrape counts both answers."""
    (tmp_path / "prom").mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url(),  # the scrape reads the test database's jobs
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
    }
    for code in (SERVE_TWO_REQUESTS, SERVE_TWO_REQUESTS, SCRAPE_LATENCY):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["4"]
