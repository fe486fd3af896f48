"""Deterministic train/validation split."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from finetune_core.contracts.packing import val_count
from finetune_core.data.types import Example


def _key(example: Example, seed: int) -> bytes:
    # Hashing the content (not the position) makes the split independent of input order
    # and stable when rows are appended: old rows keep their side.
    text = json.dumps([seed, [[m.role, m.content, m.weight] for m in example.messages]])
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def split_order(examples: Sequence[Example], seed: int = 0) -> list[int]:
    """Example indices in the order the split holds them out: the first val_count go to
    validation (the dataset report keeps lengths in this order for the estimate)."""
    return sorted(range(len(examples)), key=lambda i: (_key(examples[i], seed), i))


def train_val_split(
    examples: Sequence[Example], *, val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """(train, val), each in input order; val has >= 1 example when len >= 2 and fraction > 0."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    n_val = val_count(len(examples), val_fraction)
    val_ids = set(split_order(examples, seed)[:n_val])
    train = [e for i, e in enumerate(examples) if i not in val_ids]
    val = [e for i, e in enumerate(examples) if i in val_ids]
    return train, val
