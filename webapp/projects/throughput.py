"""Measured fine-tune figures: what finished runs took on the workers, for the estimate.

Each fine-tune that settles SUCCEEDED adds one sample to its (lane, device, base model,
quantization) row, in the settle's transaction (`sample_add`): the tokens it trained on
(counted as the estimate counts them, so the two agree), the seconds its training loop
took (from its "start" event to its "done" event), the seconds around it (model loading
before, publishing after: `startup_s`) and the peak memory the worker reported. The
last KEEP_RUNS samples are kept; `Figures` turns them into a time and a memory, each with
a range, for a run not made yet:

- time = the median start-up + tokens / the median training rate; the range spans what
  each sample alone would predict, and at least +-TIME_MARGIN.
- memory = fixed + per_token x (batch_size x max_length): both fitted by least squares
  when the samples differ enough in batch tokens, else the fixed part from the samples
  with the formula's per-token share; the range spans the samples' misfit, at least
  +-MEMORY_MARGIN. Runs that skipped gradient checkpointing count only while no run
  that checkpointed was measured: they took more than a run needs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from webapp.jobs.models import Job, JobEvent
from webapp.projects.models import MeasuredThroughput

KEEP_RUNS = 8
TIME_MARGIN = 0.3
MEMORY_MARGIN = 0.2
# Batch tokens must differ by this factor between samples to fit memory's per-token share.
FIT_SPREAD = 1.2


@dataclass(frozen=True)
class Range:
    value: float
    low: float
    high: float


def run_timing(job: Job, *, now: Any = None) -> tuple[float, float] | None:
    """(training seconds, start-up seconds) of a finished job from its events: the loop
    ran from the engine's "start" event (model loaded) to its "done" event (adapter
    saved); the rest of started_at..now is start-up. None for a resumed run (its time
    is split over deliveries) or one without both events."""
    if job.started_at is None:
        return None
    events = JobEvent.objects.filter(job_id=job.pk, data__kind__in=("start", "done", "resume"))
    at: dict[str, Any] = {}
    for kind, created in events.order_by("created_at", "id").values_list(
        "data__kind", "created_at"
    ):
        at[kind] = created
    if "resume" in at or "start" not in at or "done" not in at:
        return None
    now = now or timezone.now()
    train = (at["done"] - at["start"]).total_seconds()
    startup = (at["start"] - job.started_at).total_seconds() + (now - at["done"]).total_seconds()
    if train <= 0:
        return None
    return train, max(0.0, startup)


def sample_add(
    *, lane: str, device: str, base_model: str, quantization: str, sample: dict[str, Any]
) -> MeasuredThroughput:
    """Add one finished run's sample (a second settle of the same run replaces it)."""
    with transaction.atomic():
        row, _ = MeasuredThroughput.objects.get_or_create(
            lane=lane, device=device, base_model=base_model, quantization=quantization
        )
        row = MeasuredThroughput.objects.select_for_update().get(pk=row.pk)
        kept = [r for r in row.runs if r.get("run") != sample.get("run")]
        row.runs = [*kept, sample][-KEEP_RUNS:]
        row.save(update_fields=["runs", "updated_at"])
    return row


@dataclass(frozen=True)
class Figures:
    lane: str
    device: str
    runs: tuple[dict[str, Any], ...]

    @property
    def count(self) -> int:
        return len(self.runs)

    @property
    def tokens_per_s(self) -> float:
        return statistics.median(r["tokens"] / r["train_s"] for r in self.runs)

    @property
    def startup_s(self) -> float:
        return statistics.median(r["startup_s"] for r in self.runs)

    def nearest(self, batch_tokens: int | None) -> tuple[dict[str, Any], ...]:
        """The runs whose batch (batch_size x max_length) is closest to `batch_tokens`: a
        CPU trains a batch of 4 x 512 several times faster a token than one of 1 x 256,
        so a rate is taken from runs of a like batch where there are any."""
        sized = [r for r in self.runs if r.get("batch_tokens")]
        if not batch_tokens or not sized:
            return self.runs
        gap = min(abs(math.log(r["batch_tokens"] / batch_tokens)) for r in sized)
        return tuple(
            r for r in sized if abs(math.log(r["batch_tokens"] / batch_tokens)) <= gap + 0.01
        )

    def seconds(self, tokens: int, batch_tokens: int | None = None) -> Range:
        like = Figures(self.lane, self.device, self.nearest(batch_tokens))
        value = self.startup_s + tokens / like.tokens_per_s
        alone = [r["startup_s"] + tokens * r["train_s"] / r["tokens"] for r in like.runs]
        low = min(min(alone), value * (1 - TIME_MARGIN))
        high = max(max(alone), value * (1 + TIME_MARGIN))
        return Range(value, low, high)

    def memory(self, batch_tokens: int, formula: Callable[[int], float]) -> Range | None:
        """Peak memory for batch_size x max_length = batch_tokens. `formula` is the formula's
        memory at a batch's tokens: its shape, scaled to the measured peaks, is used until
        the samples differ enough to fit a line of their own."""
        sampled = [r for r in self.runs if r.get("peak_bytes")]
        # A run that skipped checkpointing (memory was plentiful) took more than a run
        # needs: such runs count only while no checkpointed run was measured.
        least = [r for r in sampled if r.get("checkpointed", True)] or sampled
        points = [(r["batch_tokens"], r["peak_bytes"]) for r in least]
        if not points:
            return None
        xs = [x for x, _ in points]
        if max(xs) >= FIT_SPREAD * min(xs):
            mean_x, mean_y = statistics.fmean(xs), statistics.fmean(y for _, y in points)
            var = sum((x - mean_x) ** 2 for x in xs)
            per_token = max(0.0, sum((x - mean_x) * (y - mean_y) for x, y in points) / var)
            fixed = max(0.0, mean_y - per_token * mean_x)

            def predict(x: float) -> float:
                return fixed + per_token * x
        else:
            scale = statistics.median(y / max(1.0, formula(x)) for x, y in points)

            def predict(x: float) -> float:
                return scale * formula(int(x))

        value = predict(batch_tokens)
        misfit = [y / max(1.0, predict(x)) - 1 for x, y in points]
        below = max(MEMORY_MARGIN, -min(misfit))
        above = max(MEMORY_MARGIN, max(misfit))
        return Range(value, value * (1 - below), value * (1 + above))


def figures_for(*, lane: str, base_model: str, quantization: str) -> Figures | None:
    """The measured figures of runs of this model on this lane: of the device that
    reported last when the lane's workers differ."""
    row = (
        MeasuredThroughput.objects.filter(
            lane=lane, base_model=base_model, quantization=quantization
        )
        .order_by("-updated_at", "-id")
        .first()
    )
    runs = tuple(r for r in (row.runs if row else []) if r.get("train_s") and r.get("tokens"))
    return Figures(lane=row.lane, device=row.device, runs=runs) if runs else None
