"""What the workers can take now, per queue: the alive workers' count, their largest device
memory and the models they hold. The records live in webapp.ops (WorkerHost), above the
apps that route jobs, so ops hands its reader in at start (OpsConfig.ready) and routing
(webapp.projects.routing) reads it here."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from webapp.jobs.models import Job, JobStatus
from webapp.jobs.selectors import _on_queues


@dataclass(frozen=True)
class QueueCapacity:
    queue: str
    workers: int  # alive workers serving it
    memory_bytes: int | None  # the largest device memory among them; None: not reported
    devices: tuple[str, ...]  # e.g. ("NVIDIA H100 80GB HBM3",)
    cached_models: frozenset[str]
    hosts: frozenset[str] = frozenset()  # the alive workers' names


_source: Callable[[], list[QueueCapacity]] | None = None


def set_source(source: Callable[[], list[QueueCapacity]]) -> None:
    global _source
    _source = source


def capacities() -> list[QueueCapacity]:
    return _source() if _source else []


def queued_count(queue: str) -> int:
    """Jobs waiting on `queue` now (sent, not yet taken by a worker)."""
    return _on_queues(Job.objects.filter(status=JobStatus.QUEUED), [queue]).count()


def running_count(queue: str) -> int:
    """Jobs running from `queue` now (each holds a worker that serves it)."""
    return _on_queues(Job.objects.filter(status=JobStatus.RUNNING), [queue]).count()


def workers_serving(queues: Iterable[str]) -> int:
    """Alive workers serving any of `queues`, each counted once."""
    wanted = set(queues)
    return len({host for c in capacities() if c.queue in wanted for host in c.hosts})
