"""Routing a fine-tune by what fits: of the operator's TRAINING_QUEUES that alive workers
serve, the one whose largest device fits the memory estimate with the least to spare (so
the big GPUs stay free for the jobs that need them). A job that fits no worker is refused
before it is queued, naming the nearest settings that would fit; with no worker alive it
waits on the first queue, and the estimate says so with the queue's length, not a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from webapp.core.limits import LimitExceeded
from webapp.jobs import fleet
from webapp.jobs.fleet import QueueCapacity
from webapp.projects.finetune_config import effective_hparams

MemoryOf = Callable[[dict[str, Any]], int]
# The smallest values the nearest-fit search goes down to.
MIN_LENGTH, MIN_RANK = 256, 4


@dataclass(frozen=True)
class Route:
    queue: str
    workers: int  # alive workers serving it (0: the job waits for one)
    capacity_bytes: int | None  # its largest device's memory
    waiting: int  # jobs queued there now
    fits: bool = True
    reason: str = ""  # why it fits nowhere, and what would
    cached: bool = False  # a worker there has the model converted already
    running: int = 0  # jobs running there now

    @property
    def ahead(self) -> str:
        """What the run waits behind: the estimate's time counts from when it starts."""
        queued = f"{self.waiting} job(s) queued there now" if self.waiting else "none queued"
        if not self.running:
            return queued
        busy = self.workers and self.running >= self.workers
        wait = ": it starts when one of them ends" if busy and not self.waiting else ""
        return f"{queued}, {self.running} running{wait}"

    @property
    def text(self) -> str:
        if not self.fits:
            return self.reason
        ahead = self.ahead
        if not self.workers:
            return (
                f"No worker serving {self.queue} is alive now: the run waits for one "
                f"({ahead}), however long that takes."
            )
        size = f", {_gib(self.capacity_bytes)}" if self.capacity_bytes else ""
        cached = ", the model ready there" if self.cached else ", the model not yet loaded there"
        return f"Runs on {self.queue} ({self.workers} worker(s){size}{cached}); {ahead}."


def _gib(size: int | None) -> str:
    return f"{(size or 0) / 2**30:.1f} GiB"


def training_capacities() -> list[QueueCapacity]:
    """The alive training queues, in the operator's order."""
    named = settings.TRAINING_QUEUES
    found = (c for c in fleet.capacities() if c.queue in named)
    return sorted(found, key=lambda c: named.index(c.queue))


def route(config: dict[str, Any], memory_of: MemoryOf) -> Route:
    """Where a fine-tune with `config` goes (see the module's docstring)."""
    queues = training_capacities()
    if not queues:
        first = settings.TRAINING_QUEUES[0]
        return Route(first, 0, None, fleet.queued_count(first))
    need = memory_of(config)
    fits = [c for c in queues if c.memory_bytes is None or c.memory_bytes >= need]
    if fits:
        best = min(fits, key=lambda c: c.memory_bytes or float("inf"))
        waiting = fleet.queued_count(best.queue)
        cached = config.get("base_model") in best.cached_models
        running = fleet.running_count(best.queue)
        return Route(
            best.queue, best.workers, best.memory_bytes, waiting, cached=cached, running=running
        )
    largest = max(queues, key=lambda c: c.memory_bytes or 0)
    reason = (
        f"This fine-tune needs about {_gib(need)}, more than any worker has: the largest "
        f"alive is {largest.queue} with {_gib(largest.memory_bytes)}. "
        + nearest_fit(config, memory_of, largest.memory_bytes or 0)
    )
    return Route(largest.queue, largest.workers, largest.memory_bytes, 0, False, reason)


def _smaller(hp: dict[str, Any]) -> list[dict[str, Any]]:
    """One step down each knob that memory follows, most harmless first."""
    steps: list[dict[str, Any]] = []
    if hp["quantization"] != "nf4":
        steps.append({"quantization": "nf4"})
    if int(hp["batch_size"]) > 1:  # the same examples a step, in more micro-batches
        steps.append(
            {"batch_size": int(hp["batch_size"]) // 2, "grad_accum": 2 * int(hp["grad_accum"])}
        )
    if int(hp["max_length"]) > MIN_LENGTH:
        steps.append({"max_length": max(MIN_LENGTH, int(hp["max_length"]) // 2)})
    if int(hp["lora_r"]) > MIN_RANK:
        steps.append({"lora_r": int(hp["lora_r"]) // 2})
    return steps


LABELS = {
    "quantization": "quantization",
    "batch_size": "batch size",
    "grad_accum": "gradient accumulation",
    "max_length": "max length",
    "lora_r": "LoRA rank",
}


def nearest_fit(config: dict[str, Any], memory_of: MemoryOf, capacity: int) -> str:
    """The settings, changed a step at a time (the most harmless step that still saves
    memory first), that bring the estimate under `capacity`; or that none does."""
    changed, need = dict(config), memory_of(config)
    while need > capacity:
        for step in _smaller(effective_hparams(changed)):
            smaller = memory_of(changed | step)
            if smaller < need * 0.99:
                changed, need = changed | step, smaller
                break
        else:
            return (
                "No smaller setting fits: choose a smaller model, or add a worker with more memory."
            )
    hp = effective_hparams(changed)
    told = [
        f"{LABELS[k]} {hp[k]}" for k in LABELS if str(hp[k]) != str(effective_hparams(config)[k])
    ]
    return f"It would fit with {', '.join(told)} (about {_gib(need)})."


def route_check(found: Route | None) -> None:
    if found is not None and not found.fits:
        raise LimitExceeded(found.reason, status=400, api_code="no_worker_fits", field="base_model")
