"""Token statistics of a dataset under a model's chat template."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from finetune_core.data.types import Example

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def count_tokens(example: Example, tokenizer: PreTrainedTokenizerBase) -> int:
    """Tokens of the whole conversation as the chat template renders it for training."""
    messages = [{"role": m.role, "content": m.content} for m in example.messages]
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    # transformers 5 returns a BatchEncoding here; older versions a plain list.
    if isinstance(ids, Mapping):
        ids = ids["input_ids"]
    return len(ids)


def _p95(sorted_values: list[int]) -> int:
    """Nearest-rank 95th percentile: the smallest value >= 95% of the values."""
    return sorted_values[math.ceil(0.95 * len(sorted_values)) - 1]


def dataset_stats(
    examples: Iterable[Example], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, Any]:
    """Rows, token length distribution, truncation and tokens per epoch (JSON-serializable)."""
    lengths = sorted(count_tokens(e, tokenizer) for e in examples)
    if not lengths:
        return {
            "rows": 0,
            "tokens": None,
            "n_truncated": 0,
            "tokens_per_epoch": 0,
            "max_length": max_length,
        }
    return {
        "rows": len(lengths),
        "tokens": {
            "min": lengths[0],
            "median": statistics.median(lengths),
            "p95": _p95(lengths),
            "max": lengths[-1],
            "total": sum(lengths),
        },
        "n_truncated": sum(n > max_length for n in lengths),
        # Training truncates each example to max_length, so that is what an epoch costs.
        "tokens_per_epoch": sum(min(n, max_length) for n in lengths),
        "max_length": max_length,
    }
