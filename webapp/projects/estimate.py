"""Pre-flight estimate of a fine-tune: steps, tokens, time and memory, before queueing.

Computed from the dataset version's validation report (example count and approximate
token lengths); no model is loaded. Time and memory come from what earlier runs of the
same base model measured on the fine-tune workers (webapp.projects.throughput: a
training rate, a start-up cost and peak memory, refreshed by each run that succeeds),
each with a range. Before any run of a model has finished, time falls back to the model
catalog's training throughput on an idle 2-core CPU (tokens_per_s_cpu, no model
loading) and memory to a formula: the base weights (NF4: ~0.55 bytes a parameter;
unquantized bf16: 2), the adapter with its AdamW state, and activations; real runs have
taken several times either, which the range and the basis note say.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.db import transaction

from finetune_core.contracts.packing import (
    REPORT_LENGTHS_MAX,
    optimizer_steps,
    row_count,
    val_count,
)
from webapp.core.catalog import model_info
from webapp.core.limits import LimitExceeded
from webapp.datasets.models import DatasetVersion
from webapp.jobs import queue
from webapp.jobs.fleet import QueueCapacity
from webapp.jobs.models import Job
from webapp.projects import throughput
from webapp.projects.finetune_config import effective_hparams
from webapp.projects.models import CellRun
from webapp.projects.routing import Route, route

log = logging.getLogger(__name__)

BYTES_PER_PARAM = {"nf4": 0.55, "none": 2.0}
# LoRA adds about 2 * r * hidden parameters per adapted matrix; ~7 matrices a layer.
ADAPTER_SHARE_PER_RANK = 0.0004
OVERHEAD_BYTES = 940 * 2**20  # framework, tokenizer, Python, the model's loading
# A token of the batch holds its logits (in bf16 and fp32), their softmax and gradients,
# per vocabulary entry, and per layer what checkpointing keeps plus the layer recomputed:
# fitted to measured peaks of SmolLM2 and Gemma 3 (make bench-estimate).
LOGIT_BYTES_PER_VOCAB = 5.3
LAYER_BYTES_PER_HIDDEN = 54
ACTIVATION_BYTES_PER_TOKEN = 1_200_000  # a model whose sizes are not known
# An unquantized base keeps about half as much a token as a 4-bit one, whose training
# upcasts the embedding and head to fp32 (peft's k-bit preparation).
TOKEN_SHARE = {"nf4": 1.0, "none": 0.5}
# With no measured run: runs have taken up to this many times the catalog's time
# (issue 27: 5 to 8 times); the formula's memory has been within this range of measured
# peaks (make bench-estimate).
CATALOG_SLOWER = 8.0
CATALOG_FASTER = 0.6  # a 3-step run took 8 s against the catalog's 10 s: startup varies
# Imports, loading and quantizing the model, reading the data, saving: a 3-step run of
# SmolLM2-135M took 8-11 s end to end on the quiet 2-core CPU, 5-8 s of it before and after
# training (make bench-estimate-loop, 2026-12-06).
CATALOG_STARTUP_S = 7.0
FORMULA_RANGE = (0.7, 1.5)
LANE = queue.GPU  # measured figures' lane when routing names no other (TRAINING_QUEUES)
ASSUMED_TOKENS = 256  # an example's tokens when the dataset report has no statistics
# The job params key of the estimate a run was queued with (Estimate.as_dict).
ESTIMATE = "estimate"


@dataclass(frozen=True)
class Estimate:
    examples: int
    train_examples: int
    steps: int
    tokens: int
    seconds: float | None
    memory_bytes: int
    notes: tuple[str, ...]
    # The range around seconds and memory_bytes, and what they are based on.
    seconds_low: float | None = None
    seconds_high: float | None = None
    memory_low: int = 0
    memory_high: int = 0
    basis: str = ""
    measured_runs: int = 0  # earlier runs the figures come from; 0: catalog and formula
    route: Route | None = None  # where it would run (preflight), and whether it fits

    @property
    def time_text(self) -> str:
        return _duration(self.seconds)

    @property
    def time_range_text(self) -> str:
        if self.seconds_low is None or self.seconds_high is None:
            return "unknown"
        return f"{_duration(self.seconds_low)} to {_duration(self.seconds_high)}"

    def as_dict(self) -> dict[str, Any]:
        """The estimate as the APIs and job params carry it."""
        return {
            "steps": self.steps,
            "tokens": self.tokens,
            "seconds": _rounded(self.seconds),
            "seconds_low": _rounded(self.seconds_low),
            "seconds_high": _rounded(self.seconds_high),
            "memory_bytes": self.memory_bytes,
            "memory_low": self.memory_low,
            "memory_high": self.memory_high,
            "measured_runs": self.measured_runs,
            "basis": self.basis,
            **({"queue": self.route.queue} if self.route else {}),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes = seconds / 60
    return f"{seconds:.0f} s" if minutes < 2 else f"{minutes:.0f} min"


@dataclass(frozen=True)
class Counts:
    examples: int
    train_examples: int
    steps: int
    tokens: int
    batch_tokens: int  # batch_size x max_length: what activations scale with
    notes: tuple[str, ...]


def counts(config: dict[str, Any], version: DatasetVersion) -> Counts:
    """Steps and tokens of a fine-tune of `version` with `config`, from its report: the
    training examples' lengths packed into rows as the engine packs them."""
    hp = effective_hparams(config)
    stats = (version.report or {}).get("stats") or {}
    # Exact counts when the report used a tokenizer (ideally this cell's base model's).
    approx = stats.get("tokens") or stats.get("approx_tokens") or {}
    n, max_length = int(version.n_examples), int(hp["max_length"])
    notes = []
    if stats.get("model") and stats["model"] != config.get("base_model"):
        notes.append(f"Token counts are {stats['model']}'s; this model's tokenizer may differ.")
    if not approx:
        notes.append(
            f"No token statistics in the dataset report; assumed {ASSUMED_TOKENS} tokens an "
            "example."
        )
    # A separate validation dataset leaves every example of this one to train on.
    held_out = 0 if config.get("val_dataset_cell") else val_count(n, float(hp["val_fraction"]))
    lengths, share = train_lengths(stats, n, held_out)
    # Preference pairs are never packed: each pair is a row of its own.
    packed = hp["training_method"] == "supervised"
    rows = math.ceil(row_count(lengths, max_length, packing=packed) * share)
    batch, accum = int(hp["batch_size"]), int(hp["grad_accum"])
    steps = optimizer_steps(
        rows,
        batch_size=batch,
        grad_accum=accum,
        epochs=int(hp["epochs"]),
        max_steps=hp["max_steps"],
    )
    # Tokens follow the micro-batches the steps take, a share of an epoch's each.
    epoch_tokens = sum(min(length, max_length) for length in lengths) * share
    tokens = int(epoch_tokens * steps * accum / max(1, math.ceil(rows / batch)))
    if approx.get("max", 0) > max_length:
        notes.append(
            f"The longest example has ~{approx['max']} tokens; max_length {max_length} cuts it."
        )
    return Counts(n, n - held_out, steps, tokens, batch * max_length, tuple(notes))


def train_lengths(stats: dict[str, Any], n: int, held_out: int) -> tuple[list[int], float]:
    """The training examples' token lengths (or a sample of them) and how many examples
    each stands for. The report keeps every example's length (every stride-th past its
    cap) in the order the split at its seed holds examples out; an older report has only
    the mean, which every example is taken to have."""
    split = stats.get("split_lengths") or {}
    values, stride = split.get("values") or [], int(split.get("stride") or 1)
    if values and len(values) == math.ceil(n / stride):
        # A seed other than the report's holds out other examples: a sample alike.
        kept = values[math.ceil(held_out / stride) :]
        return kept, (n - held_out) / max(1, len(kept))
    approx = stats.get("tokens") or stats.get("approx_tokens") or {}
    mean = approx["total"] / max(1, int(stats.get("rows") or n)) if approx else ASSUMED_TOKENS
    size = min(n - held_out, REPORT_LENGTHS_MAX)
    return [math.ceil(mean)] * size, (n - held_out) / size


def per_token_bytes(facts: dict[str, Any]) -> float:
    """Training memory a token of the batch adds, from the model's sizes."""
    vocab, layers, hidden = (
        int(facts.get(k) or 0) for k in ("vocab_size", "layers", "hidden_size")
    )
    if not vocab:
        return float(ACTIVATION_BYTES_PER_TOKEN)
    return LOGIT_BYTES_PER_VOCAB * vocab + LAYER_BYTES_PER_HIDDEN * layers * hidden


def formula_at(config: dict[str, Any], facts: dict[str, Any] | None = None) -> Callable[[int], int]:
    """The formula's memory of `config` at a batch of `tokens` (batch_size x max_length)."""
    facts = facts or model_info(config.get("base_model", ""))
    return lambda tokens: formula_memory(
        {**config, "batch_size": 1, "max_length": tokens}, facts=facts
    )


def formula_memory(config: dict[str, Any], *, facts: dict[str, Any] | None = None) -> int:
    """Memory by formula alone: weights, adapter with its optimizer state, activations
    (`facts`: the model's sizes, else its record's)."""
    hp = effective_hparams(config)
    facts = facts or model_info(config.get("base_model", ""))
    params = facts.get("parameters") or 0
    # 4-bit quantizes the linear layers; the embedding table stays 16-bit.
    embedding = min(params, int(facts.get("vocab_size") or 0) * int(facts.get("hidden_size") or 0))
    weights = (params - embedding) * BYTES_PER_PARAM.get(hp["quantization"], 2.0) + 2 * embedding
    adapter = params * ADAPTER_SHARE_PER_RANK * int(hp["lora_r"]) * 16  # fp32 + grads + AdamW
    tokens = int(hp["batch_size"]) * int(hp["max_length"])
    activations = tokens * per_token_bytes(facts) * TOKEN_SHARE.get(hp["quantization"], 1.0)
    return int(weights + adapter + activations + OVERHEAD_BYTES)


def availability(
    facts: dict[str, Any], capacities: list[QueueCapacity]
) -> tuple[int, list[dict[str, Any]]]:
    """A default fine-tune's memory of the model with these catalog `facts`, and which of
    the training queues' `capacities` (training_capacities(), read once for a listing) can
    take it now: the catalog's user side, /v1/models."""
    model, need = facts["name"], formula_memory({"base_model": facts["name"]}, facts=facts)
    return need, [
        {
            "queue": c.queue,
            "workers": c.workers,
            "memory_bytes": c.memory_bytes,
            "fits_default_settings": c.memory_bytes is None or c.memory_bytes >= need,
            "model_ready": model in c.cached_models,
        }
        for c in capacities
    ]


def catalog_seconds(tokens: int, rate: float | None) -> float | None:
    """Before any measured run: loading, then the tokens at the catalog's CPU rate."""
    return CATALOG_STARTUP_S + tokens / rate if rate else None


def preflight(config: dict[str, Any], version: DatasetVersion | None) -> Estimate | None:
    """The estimate on the queue the run would be routed to (webapp.projects.routing)."""
    first = estimate(config, version)
    if first is None:
        return None
    where = route(config, lambda c: estimate(c, version).memory_bytes)  # type: ignore[union-attr]
    found = estimate(config, version, lane=where.queue) if where.queue != LANE else first
    return replace(found, route=where)  # type: ignore[arg-type]


def estimate(
    config: dict[str, Any], version: DatasetVersion | None, *, lane: str = LANE
) -> Estimate | None:
    if version is None or not version.n_examples:
        return None
    found = counts(config, version)
    model = config.get("base_model", "")
    quantization = effective_hparams(config)["quantization"]
    memory = formula_memory(config)
    figures = throughput.figures_for(lane=lane, base_model=model, quantization=quantization)
    head = (found.examples, found.train_examples, found.steps, found.tokens)
    if figures is None:
        rate = model_info(model).get("tokens_per_s_cpu")
        seconds = catalog_seconds(found.tokens, rate)
        slower = seconds * CATALOG_SLOWER if seconds is not None else None
        faster = seconds * CATALOG_FASTER if seconds is not None else None
        catalog = f"the model catalog's {rate} tokens/s" if rate else "no catalog figure"
        basis = (
            f"No run of {model} has finished on the workers yet: the time is from {catalog} "
            f"on an idle 2-core CPU after ~{CATALOG_STARTUP_S:.0f} s loading, and the memory from a "
            f"formula fitted to measured peaks; runs have taken up to {CATALOG_SLOWER:.0f} "
            f"times that time."
        )
        return Estimate(
            *head,
            seconds,
            memory,
            found.notes,
            seconds_low=faster,
            seconds_high=slower,
            memory_low=int(memory * FORMULA_RANGE[0]),
            memory_high=int(memory * FORMULA_RANGE[1]),
            basis=basis,
        )
    time = figures.seconds(found.tokens, found.batch_tokens)
    measured = figures.memory(found.batch_tokens, formula_at(config))
    device = f" ({figures.device})" if figures.device else ""
    runs = "1 earlier run" if figures.count == 1 else f"{figures.count} earlier runs"
    basis = (
        f"Based on {runs} of {model} ({quantization}) on the {figures.lane} workers{device}: "
        f"{figures.tokens_per_s:.0f} tokens/s training after ~{figures.startup_s:.0f} s "
        f"loading and saving"
    )
    if measured is None:
        basis += "; memory from a formula, no peak measured yet"
        low, high = (int(memory * share) for share in FORMULA_RANGE)
    else:
        basis += ", and their peak memory"
        memory, low, high = int(measured.value), int(measured.low), int(measured.high)
    return Estimate(
        *head,
        time.value,
        memory,
        found.notes,
        seconds_low=time.low,
        seconds_high=time.high,
        memory_low=low,
        memory_high=high,
        basis=basis + ".",
        measured_runs=figures.count,
    )


def finished_run_measure(*, run: CellRun, job: Job | None, outputs: dict[str, Any]) -> None:
    """A fine-tune settled SUCCEEDED: its tokens, seconds and peak memory join the
    figures the next estimate of its model on its lane uses. Called inside the settle's
    transaction; a run it cannot measure (resumed, no events, its dataset version gone)
    adds nothing, and a failure here never undoes the settle."""
    if job is None:
        return
    try:
        with transaction.atomic():
            _measure(run, job, outputs)
    except Exception:  # noqa: BLE001 - the figures are a hint; the run's outcome must land
        log.exception("could not record the measured figures of run %s", run.pk)


def _measure(run: CellRun, job: Job, outputs: dict[str, Any]) -> None:
    inputs = run.inputs or {}
    version_id = outputs.get("dataset_version")
    version = DatasetVersion.objects.filter(pk=version_id).first() if version_id else None
    timing = throughput.run_timing(job)
    if version is None or not version.n_examples or timing is None:
        return
    found = counts(inputs, version)
    steps_done = job.progress_current or found.steps
    tokens = round(found.tokens * steps_done / max(1, found.steps))
    train_s, startup_s = timing
    metrics = job.metrics or {}
    peak = metrics.get("peak_memory_bytes")
    throughput.sample_add(
        lane=((job.params or {}).get("_task") or {}).get("queue") or LANE,
        device=str(metrics.get("device") or ""),
        base_model=inputs.get("base_model", ""),
        quantization=effective_hparams(inputs)["quantization"],
        sample={
            "run": run.pk,
            "tokens": tokens,
            "train_s": round(train_s, 3),
            "startup_s": round(startup_s, 3),
            "peak_bytes": int(peak) if isinstance(peak, int | float) and peak > 0 else None,
            "batch_tokens": found.batch_tokens,
            "steps": steps_done,
            # The engine skips checkpointing where memory is plentiful (auto).
            "checkpointed": metrics.get("gradient_checkpointing") != 0,
        },
    )


def steps_cap_check(config: dict[str, Any], version: DatasetVersion | None) -> None:
    """Refuses a fine-tune whose steps (max_steps, else the estimate from its dataset) go
    over the operator's TEAM_MAX_STEPS."""
    cap = settings.TEAM_MAX_STEPS
    if not cap:
        return
    found = estimate(config, version)
    steps = found.steps if found else effective_hparams(config)["max_steps"]
    if steps is not None and steps <= cap:
        return
    counted = f"would take {steps} steps" if steps else "has steps not counted yet"
    raise LimitExceeded(
        f"This fine-tune {counted}, over the cap of {cap} steps a run may take. "
        f"Set Max steps to {cap} or fewer, or train fewer epochs.",
        status=400,
        api_code="max_steps_limit",
        field="max_steps",
    )
