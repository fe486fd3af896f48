"""A worker announces itself: its host, device (and memory), the NF4 path it checked at
start, the queues it serves and the base models its host has converted, in an
ops.WorkerHost record it refreshes every
WORKER_HEARTBEAT_S from a thread of its main process (each write on that thread's own
database connection, closed after it, so a pool child never inherits it). The admin shows
the records; one quiet for WORKER_LOST_AFTER_S shows as lost."""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from typing import Any

from celery import signals
from django.conf import settings
from django.db import DatabaseError, connection

log = logging.getLogger(__name__)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def device_facts() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device, name, memory = "cuda", props.name, props.total_memory
    else:
        device, name = "cpu", _cpu_name()
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    # An operator (or a test) may state the size, e.g. to route by a share of a GPU.
    memory = settings.WORKER_DEVICE_MEMORY_BYTES or memory
    return {"device": device, "device_name": name, "device_memory_bytes": memory}


@functools.cache
def check_nf4_kernels() -> str:
    """Once per process: builds or loads the compiled NF4 kernels and logs the path NF4
    layers take; loudly, with the reason, when they failed and the worker falls back (it
    still starts: the fallback computes the same, slower). An unknown TUNEBOOK_NF4_BACKEND,
    or =compiled with kernels that fail, stops the worker instead."""
    from finetune_core.kernels.paths import nf4_path

    try:
        found = nf4_path()
    except ValueError as exc:
        raise SystemExit(f"cannot start: {exc}") from None
    if not found.fell_back:
        log.info("NF4 path: %s", found.describe())
    elif found.backend == "compiled":
        raise SystemExit(f"cannot start: TUNEBOOK_NF4_BACKEND=compiled, but {found.problem}")
    else:
        log.error(
            "NF4 kernels FAILED on %s, falling back to %s: %s",
            found.device,
            found.describe(),
            found.problem,
        )
    return found.path


def cached_models() -> list[str]:
    """The registered models (built-ins included) this host has converted or holds."""
    from finetune_core.models import is_cached
    from workers.base_models import registered_specs

    return sorted(spec.name for spec in registered_specs() if is_cached(spec))


class Heartbeat(threading.Thread):
    def __init__(self, name: str, queues: list[str]) -> None:
        super().__init__(name="tunebook-heartbeat", daemon=True)
        self.node, self.queues, self.done = name, queues, threading.Event()
        # The prefork pool forks new children from this process while this thread may be
        # mid-beat (holding an import lock, or the database driver's): a child forked then
        # inherits the lock held and hangs at its first task. No fork during a beat.
        self.busy = threading.Lock()
        os.register_at_fork(
            before=self.busy.acquire,
            after_in_parent=self.busy.release,
            after_in_child=self.busy.release,
        )

    def _write(self, what: str, **kwargs: Any) -> None:
        with self.busy:
            self._write_now(what, **kwargs)

    def _write_now(self, what: str, **kwargs: Any) -> None:
        from webapp.ops import workers

        try:
            getattr(workers, what)(name=self.node, **kwargs)
        except DatabaseError:  # a database restart: the next beat writes again
            log.warning("could not record worker %s (%s)", self.node, what, exc_info=True)
        finally:
            connection.close()

    def run(self) -> None:
        with self.busy:
            facts = {"host": socket.gethostname(), "pid": os.getpid(), "queues": self.queues}
            facts |= device_facts() | {"cached_models": cached_models()}
            facts["nf4_path"] = check_nf4_kernels()  # checked at start: cached
            self._write_now("worker_host_announce", facts=facts)
            log.info("worker %s announced: %s", self.node, facts)
        while not self.done.wait(settings.WORKER_HEARTBEAT_S):
            with self.busy:
                self._write_now("worker_host_seen", cached_models=cached_models())

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)
        self._write("worker_host_stopped")


_beats: list[Heartbeat] = []


@signals.celeryd_after_setup.connect
def check_kernels_at_start(**kwargs: object) -> None:
    # Once logging is set up, in the main process before the pool forks (children inherit
    # the loaded kernels) and before any task is taken.
    check_nf4_kernels()


@signals.worker_ready.connect
def announce(sender: Any, **kwargs: object) -> None:
    queues = sorted(q.name for q in sender.task_consumer.queues)
    beat = Heartbeat(sender.hostname, queues)
    _beats.append(beat)
    beat.start()


@signals.worker_shutdown.connect
def say_goodbye(**kwargs: object) -> None:
    while _beats:
        _beats.pop().stop()
