"""Servers a test starts on its own free port, to stop and restart them at will: never
the machine's shared Redis or PostgreSQL, which other tests and sessions use."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of this test's own: no snapshot, no append-only file."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder, self.url = folder, f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.folder)]
        self.proc = subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                redis.Redis(port=self.port).shutdown(nosave=True)
            except redis.ConnectionError:
                pass  # the server closes the connection as it stops
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A RedisServer this process sends its tasks to for the test."""
    from tests.web.worker_harness import broker  # loads Celery: only for the tests that ask

    server = RedisServer(tmp_path)
    server.start()
    try:
        with broker(server.url):
            yield server
    finally:
        server.stop()


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's binaries folder holding initdb and pg_ctl."""
    found = [
        folder
        for folder in Path("/usr/lib/postgresql").glob("*/bin")
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists()
    ]
    return max(found, key=lambda f: int(f.parent.name)) if found else None


class PostgresCluster:
    """A PostgreSQL cluster of this test's own (initdb + pg_ctl on a free port), so
    restarting it never touches the machine's shared server. Run as the `postgres` user
    when this process is root, which PostgreSQL refuses to run as."""

    def __init__(self, binaries: Path) -> None:
        self.bin, self.port = binaries, free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="tunebook-pg-"))  # not under root's 0700 tmp
        self.data = self.folder / "data"
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.folder, "postgres")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/tunebook"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self.as_postgres, str(self.bin / tool), *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-w", action, *args
        )

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("start", "-o", options)
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "tunebook")

    def restart(self) -> None:
        """Stop (fast: every open connection is cut) and start again, same options."""
        self._pg_ctl("restart", "-m", "fast")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("needs PostgreSQL's initdb and pg_ctl (/usr/lib/postgresql/*/bin)")
    cluster = PostgresCluster(binaries)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
