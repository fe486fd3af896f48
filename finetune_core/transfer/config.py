"""A transfer's settings (`TransferConfig`), the held-out examples it is scored on, and
the discriminator rule its synthesis used, for the report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_core.data import Example, read_examples
from finetune_core.errors import FinetuneError
from finetune_core.transfer.discriminator import (
    calibration_margins,
    check_real_recall,
    filter_threshold,
    read_info,
)
from finetune_core.transfer.source import run_splits

ABLATIONS = ("unfiltered", "seeds_only")
ORDER = (
    "source_adapter",
    "target_base",
    "transferred",
    "ablation_unfiltered",
    "ablation_seeds_only",
)


@dataclass
class TransferConfig:
    run: str  # source training run: config.json, adapter/, transfer/seeds.jsonl, discriminator/
    target: str  # the new base model
    output_dir: str
    adapter: str | None = None  # the teacher's adapter; default <run>/adapter (or a checkpoint)
    n_synthetic: int = 250
    max_attempts: int | None = None  # candidates sampled at most; default 4 * n_synthetic
    filtered: bool = True  # False: no discriminator (the "unfiltered" ablation as main run)
    # A stricter filter than p(yes) > p(no): accept only candidates scoring above what this
    # share of held-out real inputs scored when the discriminator was trained (e.g. 0.9).
    real_recall: float | None = None
    ablations: tuple[str, ...] = ()  # extra students: "unfiltered", "seeds_only"
    temperature: float = 1.0
    top_p: float = 0.95
    sample_batch: int = 8
    # Tokens per synthetic input; None: twice the longest seed's (item_token_budget).
    sample_max_new_tokens: int | None = None
    teacher_max_new_tokens: int = 64
    include_seeds: bool = True  # the seeds (real answers) join the distillation set
    # Distil only this share of the teacher's answers, those it is surest of (1.0: all, as
    # the paper does); its wrong answers are mostly its least sure (transfer/README.md).
    teacher_keep: float = 1.0
    # "sequence": train on the teacher's text (any tokenizers); "logits": also match the
    # teacher's top-k token distributions (KL), only when source and target share one.
    distillation: str = "sequence"
    logit_alpha: float = 0.5
    logit_temperature: float = 2.0
    # Student. Rank and targets left None take the source adapter's own: the paper's q, v
    # at rank 8 left the student far under the source (bench-transfer; transfer/README.md).
    epochs: int = 12
    max_steps: int | None = None
    learning_rate: float = 5e-4
    lora_r: int | None = None
    target_modules: list[str] | str | None = None
    # Small: short examples pack many to a 256-token row, and the optimizer needs the steps.
    batch_size: int = 2
    max_length: int = 256
    quantization: str = "nf4"
    # Evaluation: a file of held-out examples, else the source run's validation split.
    eval_data: str | None = None
    eval_limit: int | None = None
    eval_max_new_tokens: int = 32
    seed: int = 0

    def validate(self) -> None:
        unknown = sorted(set(self.ablations) - set(ABLATIONS))
        if unknown:
            raise FinetuneError(f"unknown ablation(s) {unknown}; known: {', '.join(ABLATIONS)}")
        if self.n_synthetic < 1:
            raise FinetuneError(f"n_synthetic must be at least 1, got {self.n_synthetic}")
        check_real_recall(self.real_recall)
        if not 0 < self.teacher_keep <= 1:
            raise FinetuneError(f"teacher_keep is a share in (0, 1], got {self.teacher_keep}")
        if not self.temperature > 0:
            raise FinetuneError("sampling needs temperature > 0")
        if self.distillation not in ("sequence", "logits"):
            raise FinetuneError(
                f"distillation must be sequence or logits, not {self.distillation!r}"
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
    info = read_info(run / "discriminator")
    margins = calibration_margins(info)
    threshold = filter_threshold(run / "discriminator", info, cfg.real_recall)
    passed = sum(m > threshold for m in margins) / len(margins) if margins else None
    return {"threshold": threshold, "real_recall": cfg.real_recall, "real_passing": passed}
