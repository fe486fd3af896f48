"""Pre-flight estimate of a fine-tune: steps, tokens, time and memory, before queueing.

Computed from the dataset version's validation report (example count and approximate
token lengths) and the model catalog; no model is loaded. Time uses each model's
training throughput on a 2-core CPU from model_catalog.json (tokens_per_s_cpu), so on
a GPU the real run is much faster. Memory counts the base weights (NF4: ~0.55 bytes a
parameter; unquantized bf16: 2), the adapter with its AdamW state, and activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from webapp.datasets.models import DatasetVersion
from webapp.projects.catalog import model_info
from webapp.projects.finetune_config import effective_hparams

BYTES_PER_PARAM = {"nf4": 0.55, "none": 2.0}
# LoRA adds about 2 * r * hidden parameters per adapted matrix; ~7 matrices a layer.
ADAPTER_SHARE_PER_RANK = 0.0004
OVERHEAD_BYTES = 600 * 2**20  # framework, tokenizer, Python


@dataclass(frozen=True)
class Estimate:
    examples: int
    train_examples: int
    steps: int
    tokens: int
    seconds: float | None
    memory_bytes: int
    notes: tuple[str, ...]

    @property
    def time_text(self) -> str:
        if self.seconds is None:
            return "unknown"
        minutes = self.seconds / 60
        return f"{self.seconds:.0f} s" if minutes < 2 else f"{minutes:.0f} min"


def estimate(config: dict[str, Any], version: DatasetVersion | None) -> Estimate | None:
    if version is None or not version.n_examples:
        return None
    hp = effective_hparams(config)
    info = model_info(config.get("base_model", ""))
    stats = (version.report or {}).get("stats") or {}
    # Exact counts when the report used a tokenizer (ideally this cell's base model's).
    approx = stats.get("tokens") or stats.get("approx_tokens") or {}
    n = int(version.n_examples)
    n_train = max(1, n - math.floor(n * float(hp["val_fraction"])))
    notes = []
    if stats.get("model") and stats["model"] != config.get("base_model"):
        notes.append(f"Token counts are {stats['model']}'s; this model's tokenizer may differ.")
    if approx:
        mean_tokens = approx["total"] / max(1, int(stats.get("rows") or n))
    else:
        mean_tokens = 256
        notes.append("No token statistics in the dataset report; assumed 256 tokens an example.")
    per_example = min(mean_tokens, int(hp["max_length"]))
    # Training packs short examples together into rows of up to max_length tokens.
    rows = min(n_train, max(1, math.ceil(n_train * per_example / int(hp["max_length"]))))
    steps_per_epoch = math.ceil(math.ceil(rows / int(hp["batch_size"])) / int(hp["grad_accum"]))
    steps = int(hp["max_steps"] or steps_per_epoch * int(hp["epochs"]))
    tokens = int(per_example * n_train * steps / max(1, steps_per_epoch))
    rate = info.get("tokens_per_s_cpu")
    seconds = tokens / rate if rate else None
    params = info.get("parameters") or 0
    weights = params * BYTES_PER_PARAM.get(hp["quantization"], 2.0)
    adapter = params * ADAPTER_SHARE_PER_RANK * int(hp["lora_r"]) * 16  # fp32 + grads + AdamW
    activations = int(hp["batch_size"]) * int(hp["max_length"]) * 40_000
    memory = int(weights + adapter + activations + OVERHEAD_BYTES)
    if approx.get("max", 0) > int(hp["max_length"]):
        notes.append(
            f"The longest example has ~{approx['max']} tokens; max_length "
            f"{hp['max_length']} cuts it."
        )
    return Estimate(n, n_train, steps, tokens, seconds, memory, tuple(notes))
