"""A real S3-compatible server for tests: moto's standalone server, a separate process that
the real boto3 client (through django-storages) reaches over HTTP on loopback.

moto is the most faithful S3 server the package registries install that runs on its own:
MinIO is not packaged, and Debian's Ceph gateway (radosgw) needs a whole Ceph cluster
behind it. Production uses AWS S3, MinIO or any other S3-compatible store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from webapp.storage_url import storages_for

ACCESS_KEY = "tunebook-test"
SECRET_KEY = "tunebook-test-secret"
REGION = "us-east-1"


def free_port() -> int:
    """A loopback port nobody listens on (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def url(self, bucket: str, prefix: str = "") -> str:
        """STORAGE_URL for `bucket` on this server."""
        path = f"/{prefix}" if prefix else ""
        return f"s3://{bucket}{path}?endpoint_url={self.endpoint}&region={REGION}"

    def client(self):  # noqa: ANN201 - boto3's client type is generated at run time
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


def credentials_env() -> dict[str, str]:
    """What a process needs in its environment to reach the server (as on a real host)."""
    return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


@contextmanager
def s3_server(host: str = "127.0.0.1") -> Iterator[S3Server]:
    """Starts moto_server on a free port and stops it afterwards."""
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(moto), "-H", host, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **credentials_env()},
    )
    endpoint = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {endpoint}") from None
                time.sleep(0.1)
        yield S3Server(endpoint)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def use_s3(s3: S3Server, settings, monkeypatch, bucket: str) -> None:
    """Both storage aliases on a fresh bucket of the test server, as STORAGE_URL would set."""
    for name, value in credentials_env().items():
        monkeypatch.setenv(name, value)
    s3.make_bucket(bucket)
    settings.STORAGES = {**settings.STORAGES, **storages_for(s3.url(bucket, "team-data"))}


@pytest.fixture(params=["local", "s3"])
def backend(request, settings, s3: S3Server, monkeypatch) -> str:
    """Points both storage aliases at one backend; returns its name."""
    if request.param == "s3":
        use_s3(s3, settings, monkeypatch, request.node.name.split("[")[0][-50:].replace("_", "-"))
    else:
        settings.STORAGES = {**settings.STORAGES, **storages_for("")}
    return request.param
