"""A real Celery worker process for end-to-end tests.

It runs `celery -A workers worker -Q <every queue> -c 1 --pool=solo` (or another pool:
prefork, as production's GPU worker, forks a child that runs the tasks; or, with
embedded=True, `python -m workers.embedded`: one such worker per lane, as `make run`
starts them) against a SQLite-file broker in a tmp folder and the test database (the
file-based SQLite test DB, or the PostgreSQL test database), so the test process and the
worker see the same rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from django.db import connection

from webapp.jobs.queue import LANES
from workers.celery import app

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        name = str(db["NAME"])
        assert not name.startswith(("file:", ":memory:")), "needs a file-based SQLite test DB"
        return f"sqlite:///{name}"
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return f"postgres://{auth}@{host}/{db['NAME']}"


def run_with_sqlite_broker(
    code: str, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh Python process with Django's settings and an embedded SQLite
    broker in tmp_path: a process that loaded nothing of this test's."""
    environ = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATA_DIR": str(tmp_path),
        "CELERY_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _reset_producer_pool() -> None:
    import kombu.pools

    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    # kombu keeps its own pools per broker URL; a closed one would be handed out again
    # to the next test on the same URL (Redis database 15).
    kombu.pools.reset()
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


# The Redis database the worker tests own; flushed before each test that uses it.
TEST_REDIS_DB = 15


def worker_broker_url(tmp_path: Path) -> str:
    """The broker a test's real worker uses: Redis when the suite runs on Redis
    (make test-web-pg sets CELERY_BROKER_URL), so the server broker is exercised too,
    else a SQLite file in tmp_path (the embedded default, no server)."""
    configured = os.environ.get("CELERY_BROKER_URL", "")
    if not configured.startswith(("redis://", "rediss://")):
        return f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    import redis

    parts = urlsplit(configured)
    url = urlunsplit(parts._replace(path=f"/{TEST_REDIS_DB}"))
    redis.Redis.from_url(url).flushdb()  # no task of an earlier test may reach this one
    return url


@contextmanager
def broker(url: str) -> Iterator[None]:
    """Point this process's task sending at `url` for the block.

    Celery reads the CELERY_BROKER_URL environment variable before its configuration,
    so both change; Redis-only transport options would break the SQLite broker.
    """
    old, old_env = app.conf.broker_url, os.environ.get("CELERY_BROKER_URL")
    old_options = app.conf.broker_transport_options
    app.conf.broker_url = os.environ["CELERY_BROKER_URL"] = url
    app.conf.broker_transport_options = {}
    _reset_producer_pool()
    try:
        yield
    finally:
        app.conf.broker_url, app.conf.broker_transport_options = old, old_options
        if old_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = old_env
        _reset_producer_pool()


class Worker:
    def __init__(
        self,
        *,
        broker_url: str,
        data_dir: Path,
        media_root: Path,
        log: Path,
        embedded: bool = False,
        include: tuple[str, ...] = (),
        database: str = "",
        pool: str = "solo",
        queues: str = "",  # default: every lane's queues
        **environ: str,
    ) -> None:
        self.log = log
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "webapp.settings",
            "DATABASE_URL": database or database_url(),  # default: this test's database
            "CELERY_BROKER_URL": broker_url,
            "DATA_DIR": str(data_dir),
            "MEDIA_ROOT": str(media_root),
            "PYTHONUNBUFFERED": "1",
            **environ,
        }
        queues = queues or ",".join(queue for lane in LANES for queue in lane)
        single = ["celery", "-A", "workers", "worker", "-Q", queues, "-c", "1", "-P", pool]
        start = ["workers.embedded"] if embedded else single
        cmd = [
            sys.executable, "-m", *start, "-l", "info",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", f"test-{os.getpid()}-{time.monotonic_ns()}@localhost",
            *(["-I", ",".join(include)] if include else []),
        ]  # fmt: skip
        self.out = log.open("ab")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self.out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The worker's processes held still (SIGSTOP) for the block, then continued."""
        os.killpg(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        # The test is over and its state is in the database: no need for a warm shutdown.
        self.kill()
        self.out.close()

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def wait_for(
    predicate: Callable[[], Any], *, timeout: float, what: str, worker: Worker | None
) -> Any:
    """Poll `predicate` until true; fails at `timeout`, or once `worker` (if this process
    started it) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if worker is not None and worker.proc.poll() is not None:
            raise AssertionError(f"worker exited while waiting for {what}:\n{worker.tail()}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{worker.tail() if worker else ''}")
