"""A worker checks its NF4 kernels at start (issue 22, images that run): a real worker
process logs the path NF4 layers take and records it in its announcement (ops.WorkerHost,
shown in the admin); with kernels that cannot load it says so loudly, with the reason, and
falls back to the PyTorch reference; asked for compiled kernels only, it refuses to start."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from tests.web.conftest import client_for
from tests.web.test_finetune_worker import start_worker
from tests.web.worker_harness import Worker, wait_for
from webapp.ops.models import WorkerHost

__all__ = ["start_worker"]  # the fixture


def announced(worker: Worker) -> WorkerHost:
    def host() -> WorkerHost | None:
        return WorkerHost.objects.filter(name__startswith="test-").first()

    return wait_for(host, timeout=90, what="the announcement", worker=worker)


@pytest.mark.skipif(
    not (shutil.which("ninja") and shutil.which(os.environ.get("CXX", "c++"))),
    reason="no C++ compiler or no ninja on PATH: the kernels cannot compile here",
)
def test_a_worker_logs_and_announces_its_compiled_nf4_path(
    start_worker: Callable[..., Worker],
) -> None:
    worker = start_worker()
    host = announced(worker)
    assert host.nf4_path == "compiled-cpu"
    assert "NF4 path: compiled CPU kernels (compiled-cpu) on cpu" in worker.tail(100_000)

    operator = User.objects.create_superuser("root", "root@example.com", "correct-horse-9x")
    page = client_for(operator).get(reverse("admin:ops_workerhost_changelist"))
    assert "NF4 path" in page.text and "compiled-cpu" in page.text


def test_a_worker_whose_kernels_cannot_load_says_why_and_falls_back(
    start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    no_sources = tmp_path / "csrc"
    no_sources.mkdir()
    worker = start_worker(TUNEBOOK_CSRC=str(no_sources))
    host = announced(worker)
    assert host.nf4_path == "reference"
    line = re.search(r".*NF4 kernels FAILED.*", worker.tail(100_000))
    assert line, worker.tail()
    assert "ERROR" in line[0] and "falling back to pure-PyTorch reference" in line[0]
    assert f"no kernel sources under {no_sources}" in line[0]  # the reason


def test_a_worker_told_to_use_compiled_kernels_only_refuses_to_start_without_them(
    start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    worker = start_worker(TUNEBOOK_CSRC=str(tmp_path), TUNEBOOK_NF4_BACKEND="compiled")
    assert worker.proc.wait(timeout=60) != 0
    assert "cannot start: TUNEBOOK_NF4_BACKEND=compiled, but" in worker.tail()
    assert not WorkerHost.objects.exists()
