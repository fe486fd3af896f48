"""Worker hosts' records (WorkerHost): written by workers/announce.py, read by the admin
and /metrics."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.utils import timezone

from webapp.api.models import ChatCompletion, CompletionStatus
from webapp.jobs.fleet import QueueCapacity
from webapp.ops.models import WorkerHost, WorkerState
from webapp.projects.models import MeasuredThroughput


def worker_host_announce(*, name: str, facts: dict[str, Any]) -> WorkerHost:
    """A worker that starts (again, under the same node name) replaces its old record."""
    now = timezone.now()
    host, _ = WorkerHost.objects.update_or_create(
        name=name,
        defaults={**facts, "started_at": now, "last_seen_at": now, "stopped_at": None},
    )
    return host


def worker_host_seen(*, name: str, cached_models: list[str]) -> None:
    WorkerHost.objects.filter(name=name).update(
        last_seen_at=timezone.now(), cached_models=cached_models, stopped_at=None
    )


def worker_host_stopped(*, name: str) -> None:
    WorkerHost.objects.filter(name=name).update(stopped_at=timezone.now())


def worker_states() -> Counter[str]:
    return Counter(str(w.state) for w in WorkerHost.objects.all())


def queue_capacities() -> list[QueueCapacity]:
    """Per queue, what its alive workers offer (webapp.jobs.fleet's source)."""
    alive = [w for w in WorkerHost.objects.filter(stopped_at=None) if w.state == WorkerState.ALIVE]
    out = []
    for queue in sorted({q for w in alive for q in w.queues}):
        serving = [w for w in alive if queue in w.queues]
        sizes = [w.device_memory_bytes for w in serving if w.device_memory_bytes]
        out.append(
            QueueCapacity(
                queue=queue,
                workers=len(serving),
                memory_bytes=max(sizes) if sizes else None,
                devices=tuple(sorted({w.device_name or w.device for w in serving})),
                cached_models=frozenset(m for w in serving for m in w.cached_models),
                hosts=frozenset(w.name for w in serving),
            )
        )
    return out


def measured_throughput(host: WorkerHost) -> list[str]:
    """What finished fine-tunes measured on the queues this worker serves, on its device:
    '<model> (<quantization>): N tokens/s over K runs'."""
    rows = MeasuredThroughput.objects.filter(lane__in=host.queues, device=host.device)
    out = []
    for row in rows.order_by("base_model"):
        runs = [r for r in row.runs if r.get("train_s") and r.get("tokens")]
        if runs:
            rate = sum(r["tokens"] for r in runs) / sum(r["train_s"] for r in runs)
            out.append(
                f"{row.base_model} ({row.quantization}): {rate:.0f} tokens/s, {len(runs)} runs"
            )
    return out


GENERATION_SAMPLES = 50  # the newest answers per worker that its generation rate is from


def measured_generation(host: WorkerHost) -> list[str]:
    """What this worker's recent answers measured, per base model and quantization:
    '<model> (<quantization>): N output tokens/s over K answers' (prompt reading included,
    as a user waits for it)."""
    rows = (
        ChatCompletion.objects.filter(
            served_by=host.name, status=CompletionStatus.SUCCEEDED, generate_s__gt=0
        )
        .order_by("-id")
        .values_list("base_model", "quantization", "completion_tokens", "generate_s")
    )
    totals: dict[tuple[str, str], tuple[int, float, int]] = {}
    for model, quantization, tokens, seconds in rows[:GENERATION_SAMPLES]:
        n_tokens, n_seconds, count = totals.get((model, quantization), (0, 0.0, 0))
        totals[model, quantization] = (n_tokens + tokens, n_seconds + seconds, count + 1)
    return [
        f"{model} ({quantization}): {tokens / seconds:.1f} output tokens/s, {count} answers"
        for (model, quantization), (tokens, seconds, count) in sorted(totals.items())
    ]
