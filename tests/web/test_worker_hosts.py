"""Workers announce themselves (ops.WorkerHost): a real worker process writes its host,
device, queues and cached models, refreshes them, and shows as lost once it goes quiet;
the admin and /metrics show the records."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path

from django.contrib.auth.models import User
from django.urls import reverse

from finetune_core.models.registry import BUILTIN
from tests.web.conftest import client_for
from tests.web.test_finetune_worker import start_worker
from tests.web.test_ops_endpoints import _scrape
from tests.web.worker_harness import Worker, wait_for
from webapp.api.models import ChatCompletion
from webapp.jobs.queue import LANES
from webapp.ops.models import WorkerHost, WorkerState
from webapp.ops.workers import worker_host_announce

__all__ = ["start_worker"]  # the fixture

GIB = 2**30


def host_of(worker: Worker) -> WorkerHost | None:
    return WorkerHost.objects.filter(pid__gt=0, name__startswith="test-").first()


def test_a_worker_announces_itself_and_is_lost_once_it_goes_quiet(
    start_worker: Callable[..., Worker], settings, tmp_path: Path
) -> None:
    settings.WORKER_LOST_AFTER_S = 3  # this process judges; the worker beats every second
    worker = start_worker(
        WORKER_HEARTBEAT_S="1", WORKER_LOST_AFTER_S="3", WORKER_DEVICE_MEMORY_BYTES=str(24 * GIB)
    )
    host = wait_for(lambda: host_of(worker), timeout=90, what="the announcement", worker=worker)
    assert host.host == socket.gethostname() and host.pid > 0
    assert (host.device, host.device_memory_bytes) == ("cpu", 24 * GIB)
    assert host.device_name  # the CPU's model name
    assert host.queues == sorted(q for lane in LANES for q in lane)
    assert set(host.cached_models) <= set(BUILTIN)  # whichever models earlier tests built
    assert host.state == WorkerState.ALIVE
    first = host.last_seen_at
    wait_for(
        lambda: WorkerHost.objects.get(pk=host.pk).last_seen_at > first,
        timeout=30,
        what="a heartbeat",
        worker=worker,
    )

    operator = User.objects.create_superuser("root", "root@example.com", "correct-horse-9x")
    page = client_for(operator).get(reverse("admin:ops_workerhost_changelist"))
    assert page.status_code == 200
    assert host.name in page.text and "24.0 GiB" in page.text and "Alive" in page.text
    assert _scrape()[("tunebook_workers", (("state", "alive"),))] == 1

    worker.kill(signal.SIGKILL)  # no goodbye: only the silence tells
    wait_for(
        lambda: WorkerHost.objects.get(pk=host.pk).state == WorkerState.LOST,
        timeout=30,
        what="the worker to show as lost",
        worker=None,
    )
    assert "Lost" in client_for(operator).get(reverse("admin:ops_workerhost_changelist")).text
    assert _scrape()[("tunebook_workers", (("state", "lost"),))] == 1


def test_a_worker_that_stops_says_so(start_worker: Callable[..., Worker]) -> None:
    worker = start_worker(WORKER_HEARTBEAT_S="1", WORKER_LOST_AFTER_S="3")
    host = wait_for(lambda: host_of(worker), timeout=90, what="the announcement", worker=worker)
    worker.kill(signal.SIGTERM)  # a warm shutdown
    assert WorkerHost.objects.get(pk=host.pk).state == WorkerState.STOPPED, worker.tail()


def test_a_restarted_worker_replaces_its_record(db: None) -> None:
    facts = {"host": "gpu-1", "pid": 10, "device": "cuda", "queues": ["gpu"]}
    worker_host_announce(name="gpu@gpu-1", facts=facts)
    again = worker_host_announce(name="gpu@gpu-1", facts={**facts, "pid": 11})
    assert WorkerHost.objects.count() == 1 and again.pid == 11
    assert again.state == WorkerState.ALIVE


def test_the_admin_shows_what_a_worker_measured_generating(db: None, team) -> None:
    facts = {"host": "gpu-1", "pid": 10, "device": "cuda", "queues": ["serve"]}
    host = worker_host_announce(name="serve@gpu-1", facts=facts)
    operator = User.objects.create_superuser("root", "root@example.com", "correct-horse-9x")
    page = reverse("admin:ops_workerhost_change", args=[host.pk])
    assert "no answer served yet" in client_for(operator).get(page).text
    answers = [(40, 2.0, "succeeded"), (20, 2.0, "succeeded"), (99, 1.0, "failed")]
    for tokens, seconds, status in answers:
        ChatCompletion.objects.create(
            team=team, model="m", base_model="smollm2-135m-instruct", completion_tokens=tokens,
            generate_s=seconds, status=status, served_by=host.name,
        )  # fmt: skip
    ChatCompletion.objects.create(  # another worker's answer is not this one's
        team=team, model="m", base_model="smollm2-135m-instruct", completion_tokens=500,
        generate_s=1.0, status="succeeded", served_by="gpu@gpu-2",
    )  # fmt: skip
    shown = "smollm2-135m-instruct (nf4): 15.0 output tokens/s, 2 answers"
    assert shown in client_for(operator).get(page).text
