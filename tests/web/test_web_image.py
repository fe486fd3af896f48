"""The web image's server (issue 22, images that run): docker/gunicorn.conf.py read by
gunicorn's own loader, then a real gunicorn started with it as the image starts it
(DEBUG off, gthread workers), answering /healthz, serving collected static files through
WhiteNoise, summing its workers' /metrics, and judged healthy by docker/healthcheck.py."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from gunicorn.app.wsgiapp import WSGIApplication
from prometheus_client.parser import text_string_to_metric_families

from tests.hosts import wait_port
from tests.s3server import free_port
from tests.web.worker_harness import database_url

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "docker" / "gunicorn.conf.py"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
BIN = Path(sys.executable).parent
HOST = "tunebook.example.test"  # the only host the server allows


def loaded(monkeypatch: pytest.MonkeyPatch, **env: str) -> WSGIApplication:
    """The settings exactly as `gunicorn -c docker/gunicorn.conf.py` reads them."""
    for name in ("WEB_WORKERS", "WEB_THREADS", "WEB_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["gunicorn", "-c", str(CONF)])
    monkeypatch.chdir(ROOT)
    return WSGIApplication()


def test_the_config_sets_gthread_workers_and_threads_from_the_environment(monkeypatch) -> None:
    cfg = loaded(monkeypatch, WEB_WORKERS="3", WEB_THREADS="8", WEB_PORT="8123").cfg
    assert (cfg.worker_class_str, cfg.workers, cfg.threads) == ("gthread", 3, 8)
    assert cfg.bind == ["0.0.0.0:8123"] and cfg.wsgi_app == "webapp.wsgi"
    assert cfg.timeout == django_settings.API_REQUEST_TIME_LIMIT_S


def test_the_config_defaults_to_the_usable_cpus_and_four_threads(monkeypatch) -> None:
    cfg = loaded(monkeypatch).cfg
    assert cfg.workers == min(8, max(2, len(os.sched_getaffinity(0))))
    assert (cfg.threads, cfg.bind) == (4, ["0.0.0.0:8000"])


def test_several_workers_get_a_fresh_metrics_folder_at_start(monkeypatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # unset: restored after the test
    cfg = loaded(monkeypatch, WEB_WORKERS="2").cfg
    cfg.on_starting(SimpleNamespace(cfg=cfg))  # what the master calls before forking
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert folder.is_dir() and not any(folder.iterdir())
    folder.rmdir()


def get(port: int, path: str, host: str = HOST) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def served(transactional_db: None, tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """gunicorn as the web image runs it: two workers, collected static files, DEBUG off,
    only HOST allowed, on this test's database (for /metrics)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DEBUG": "false",
        "SECRET_KEY": "test-web-image-key-0123456789",
        "ALLOWED_HOSTS": HOST,
        "DATA_DIR": str(tmp_path / "data"),
        "STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_URL": database_url(),
        "WEB_PORT": str(free_port()),
        "WEB_WORKERS": "2",
        "WEB_THREADS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    # An operator's folder, with a previous run's file: the server must start it empty.
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "histogram_99999.db").write_bytes(b"not a metrics file")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    python = str(BIN / "python")
    subprocess.run(
        [python, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT, env=env, check=True, timeout=60,
    )  # fmt: skip
    (tmp_path / "static" / "collected-only.txt").write_text("from STATIC_ROOT\n")
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", str(CONF)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_port("127.0.0.1", int(env["WEB_PORT"]), timeout=30, what="gunicorn")
        yield int(env["WEB_PORT"]), env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_gunicorn_serves_health_static_files_and_every_workers_metrics(
    served: tuple[int, dict[str, str]],
) -> None:
    port, env = served
    for _ in range(6):  # over both workers
        assert get(port, "/healthz") == (200, b'{"status": "ok"}')
    assert get(port, "/healthz", host="127.0.0.1")[0] == 400  # DEBUG off: hosts are checked
    assert get(port, "/static/collected-only.txt") == (200, b"from STATIC_ROOT\n")
    status, css = get(port, "/static/admin/css/base.css")
    assert status == 200 and b"body" in css

    status, body = get(port, "/metrics")
    assert status == 200
    counts = [
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "tunebook_request_duration_seconds_count"
        and sample.labels.get("view") == "healthz"
    ]
    assert sum(counts) == 6  # every worker's answers, through the multiprocess folder
    assert not (Path(env["PROMETHEUS_MULTIPROC_DIR"]) / "histogram_99999.db").exists()


def test_the_healthcheck_passes_on_the_live_server_and_fails_without_one(
    served: tuple[int, dict[str, str]],
) -> None:
    port, env = served
    check = [str(BIN / "python"), str(HEALTHCHECK)]
    alive = subprocess.run(check, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert alive.returncode == 0, alive.stderr

    gone = {**env, "WEB_PORT": str(free_port())}
    dead = subprocess.run(check, cwd=ROOT, env=gone, capture_output=True, text=True, timeout=30)
    assert dead.returncode == 1 and "unhealthy" in dead.stderr
