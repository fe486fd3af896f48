"""Token statistics of a dataset under a model's chat template."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from finetune_core.contracts.packing import report_sample
from finetune_core.contracts.train import TrainConfig
from finetune_core.data.split import split_order
from finetune_core.data.types import Example, PreferenceExample

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def count_tokens(
    example: Example, tokenizer: PreTrainedTokenizerBase, *, generation_prompt: bool = False
) -> int:
    """Tokens of the whole conversation as the chat template renders it for training
    (`generation_prompt`: with the assistant header that opens an answer)."""
    messages = [{"role": m.role, "content": m.content} for m in example.messages]
    ids = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=generation_prompt
    )
    # transformers 5 returns a BatchEncoding here; older versions a plain list.
    if isinstance(ids, Mapping):
        ids = ids["input_ids"]
    return len(ids)


def _p95(sorted_values: list[int]) -> int:
    """Nearest-rank 95th percentile: the smallest value >= 95% of the values."""
    return sorted_values[math.ceil(0.95 * len(sorted_values)) - 1]


def split_lengths(
    examples: list[Example], lengths: list[int], seed: int = TrainConfig.seed
) -> dict[str, Any]:
    """Each example's tokens in the order the split at `seed` holds examples out (every
    `stride`-th past the report's cap): the pre-flight estimate drops the validation share
    from the front and packs the rest as training will."""
    stride, values = report_sample([lengths[i] for i in split_order(examples, seed)])
    return {"seed": seed, "stride": stride, "values": values}


def dataset_stats(
    examples: Iterable[Example], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, Any]:
    """Rows, token length distribution, truncation and tokens per epoch (JSON-serializable).
    Preference pairs also get the distributions of their prompt, chosen and rejected parts."""
    examples = list(examples)
    if examples and isinstance(examples[0], PreferenceExample):
        return preference_stats(examples, tokenizer, max_length)
    in_order = [count_tokens(e, tokenizer) for e in examples]
    lengths = sorted(in_order)
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
        "split_lengths": split_lengths(examples, in_order),
    }


def _distribution(values: list[int]) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": _p95(ordered),
        "max": ordered[-1],
        "total": sum(ordered),
    }


def preference_stats(
    examples: list[PreferenceExample], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, Any]:
    """Token counts of each pair's prompt, chosen and rejected answer under the chat template.

    A prompt counts with the header that opens the answer; an answer, what it adds (its
    end-of-turn included);
    `tokens` is the longer of prompt + chosen and prompt + rejected, what max_length cuts.
    Training reads both sequences, so an epoch costs both."""
    prompt, chosen, rejected = [], [], []
    for example in examples:
        n_prompt = count_tokens(Example(example.prompt), tokenizer, generation_prompt=True)
        prompt.append(n_prompt)
        chosen.append(count_tokens(example, tokenizer) - n_prompt)
        rejected.append(count_tokens(example.with_rejected(), tokenizer) - n_prompt)
    longer = [p + max(c, r) for p, c, r in zip(prompt, chosen, rejected, strict=True)]
    pairs = zip(prompt, chosen, rejected, strict=True)
    return {
        "rows": len(examples),
        "tokens": _distribution(longer),
        "prompt_tokens": _distribution(prompt),
        "chosen_tokens": _distribution(chosen),
        "rejected_tokens": _distribution(rejected),
        "n_truncated": sum(n > max_length for n in longer),
        "tokens_per_epoch": sum(
            min(p + c, max_length) + min(p + r, max_length) for p, c, r in pairs
        ),
        "max_length": max_length,
        "split_lengths": split_lengths(list(examples), longer),
    }
