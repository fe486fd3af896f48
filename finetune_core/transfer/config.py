"""A transfer's settings (`TransferConfig`, declared in finetune_core.contracts.transfer),
the held-out examples it is scored on, and the discriminator rule its synthesis used, for
the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_core.contracts.layout import DISCRIMINATOR_DIR
from finetune_core.contracts.transfer import ABLATIONS, TransferConfig
from finetune_core.data import Example, read_examples
from finetune_core.errors import FinetuneError
from finetune_core.transfer.discriminator import (
    calibration_margins,
    filter_threshold,
    read_info,
)
from finetune_core.transfer.source import run_splits

__all__ = ["ABLATIONS", "ORDER", "TransferConfig", "eval_examples", "filter_rule"]

ORDER = (
    "source_adapter",
    "target_base",
    "transferred",
    "ablation_unfiltered",
    "ablation_seeds_only",
)


def eval_examples(cfg: TransferConfig) -> list[Example]:
    if cfg.eval_data:
        examples = list(read_examples(cfg.eval_data))
    else:
        examples = run_splits(cfg.run)[1]
    if not examples:
        raise FinetuneError("no held-out examples to evaluate on: give an eval file")
    return examples[: cfg.eval_limit] if cfg.eval_limit else examples


def filter_rule(run: Path, cfg: TransferConfig) -> dict[str, Any] | None:
    """What the discriminator accepted: the margin it had to beat, and the share of
    held-out real inputs that beat it."""
    if not cfg.filtered:
        return None
    info = read_info(run / DISCRIMINATOR_DIR)
    margins = calibration_margins(info)
    threshold = filter_threshold(run / DISCRIMINATOR_DIR, info, cfg.real_recall)
    passed = sum(m > threshold for m in margins) / len(margins) if margins else None
    return {"threshold": threshold, "real_recall": cfg.real_recall, "real_passing": passed}
