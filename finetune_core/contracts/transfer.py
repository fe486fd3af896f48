"""Every Trans-LoRA transfer setting, declared once: the engine's TransferConfig, the CLI's
flags, the notebook's transfer form and the worker's config building read these."""

from __future__ import annotations

from dataclasses import dataclass

from finetune_core.contracts.settings import ENGINE, Setting, problems_of, setting, settings_of
from finetune_core.errors import FinetuneError

ENGINE_ONLY = frozenset({ENGINE})
ABLATIONS = ("unfiltered", "seeds_only")


@dataclass
class TransferConfig:
    # The source run (config.json, adapter/, transfer/seeds.jsonl, discriminator/).
    run: str = setting("", "The source training run folder.", surfaces=ENGINE_ONLY)
    target: str = setting("", "The new base model.", surfaces=ENGINE_ONLY)
    output_dir: str = setting("", "Where the transfer writes.", surfaces=ENGINE_ONLY)
    adapter: str | None = setting(
        None, "The teacher's adapter; default <run>/adapter.", kind=str, surfaces=ENGINE_ONLY
    )
    n_synthetic: int = setting(
        250,
        "Synthetic task inputs to accept (the paper matches the original data's size).",
        minimum=1,
        maximum=5000,
        label="Synthetic samples",
    )
    max_attempts: int | None = setting(
        None,
        "Candidates sampled at most; the run stops there. Blank: 4 × samples.",
        kind=int,
        minimum=1,
        maximum=100_000,
        label="Attempt budget",
    )
    # False: no discriminator (the "unfiltered" ablation as the main run).
    filtered: bool = setting(
        True, "Filter candidates with the discriminator.", surfaces=ENGINE_ONLY
    )
    real_recall: float | None = setting(
        None,
        "E.g. 0.9: accept only candidates the discriminator scores above what 90% of "
        "held-out real inputs scored when it was trained. Blank: the paper's p(yes) > p(no).",
        kind=float,
        minimum=0.01,
        maximum=1.0,
        label="Stricter filter (share of real inputs kept)",
    )
    ablations: tuple[str, ...] = setting(
        (), "Extra students: unfiltered, seeds_only.", kind=tuple, surfaces=ENGINE_ONLY
    )
    temperature: float = setting(
        1.0, "Sampling temperature of synthesis.", minimum=0.05, maximum=2.0, label="Temperature"
    )
    top_p: float = setting(
        0.95, "Nucleus share of synthesis.", minimum=0.01, maximum=1.0, surfaces=ENGINE_ONLY
    )
    sample_batch: int = setting(8, "Candidates sampled at once.", minimum=1, surfaces=ENGINE_ONLY)
    sample_max_new_tokens: int | None = setting(
        None,
        "Blank: twice the longest seed's.",
        kind=int,
        minimum=4,
        maximum=512,
        label="Tokens per synthetic input",
    )
    teacher_max_new_tokens: int = setting(
        64,
        "Tokens the teacher writes per answer.",
        minimum=1,
        maximum=1024,
        label="Tokens per teacher answer",
    )
    include_seeds: bool = setting(
        True, "The seeds (real answers) join the distillation set.", surfaces=ENGINE_ONLY
    )
    # Its wrong answers are mostly its least sure (benchmarks/results/transfer_history.md).
    teacher_keep: float = setting(
        1.0,
        "E.g. 0.8: the student learns only the 80% of the teacher's answers it is surest "
        "of; its wrong answers are mostly among the rest. Blank: all, as the paper.",
        minimum=0.05,
        maximum=1.0,
        label="Teacher-confidence filter (share of answers kept)",
    )
    distillation: str = setting(
        "sequence",
        "Logit distillation (KL) needs source and target to share a tokenizer.",
        choices=("sequence", "logits"),
        choice_labels=(
            ("sequence", "Sequence-level: learn the teacher's answers (any two models)"),
            ("logits", "Logits: also match the teacher's token distributions (one tokenizer)"),
        ),
        label="Distillation",
    )
    logit_alpha: float = setting(
        0.5, "Weight of the KL term.", minimum=0.0, maximum=1.0, surfaces=ENGINE_ONLY
    )
    logit_temperature: float = setting(
        2.0, "Temperature of the KL term.", minimum=0.05, surfaces=ENGINE_ONLY
    )
    # Student. Rank and targets left None take the source adapter's own: the paper's q, v
    # at rank 8 left the student far under the source (bench-transfer; benchmarks/results/transfer_history.md).
    epochs: int = setting(
        12, "The paper trains up to 20.", minimum=1, maximum=50, label="Student epochs"
    )
    max_steps: int | None = setting(
        None, "Blank: no limit.", kind=int, minimum=1, label="Student max steps"
    )
    learning_rate: float = setting(
        5e-4, "Paper: 2e-5 to 2e-4.", minimum=1e-7, maximum=0.5, label="Learning rate"
    )
    lora_r: int | None = setting(
        None,
        "The student adapter's rank. Blank: the source adapter's.",
        kind=int,
        minimum=1,
        maximum=256,
        label="LoRA rank",
    )
    target_modules: list[str] | str | None = setting(
        None, "Student layers; default: the source adapter's.", kind=str, surfaces=ENGINE_ONLY
    )
    # Small: short examples pack many to a 256-token row, and the optimizer needs the steps.
    batch_size: int = setting(
        2, "Student micro-batch of packed rows.", minimum=1, maximum=256, label="Batch size"
    )
    max_length: int = setting(256, "Tokens per student row.", minimum=8, surfaces=ENGINE_ONLY)
    quantization: str = setting(
        "nf4",
        "Source, discriminator, target and student load this way.",
        choices=("nf4", "none"),
        label="Quantization",
    )
    # Evaluation: a file of held-out examples, else the source run's validation split.
    eval_data: str | None = setting(
        None, "Held-out examples; default: the run's split.", kind=str, surfaces=ENGINE_ONLY
    )
    eval_limit: int | None = setting(
        200, "Held-out examples scored per model.", minimum=1, label="Evaluation examples"
    )
    eval_max_new_tokens: int = setting(
        32,
        "Tokens each model writes per scored answer.",
        minimum=1,
        maximum=512,
        label="Tokens per evaluated answer",
    )
    seed: int = setting(0, "Seed for sampling and the student's training.", minimum=0, label="Seed")

    def validate(self) -> None:
        problems = [f"{name} is required" for name in ("run", "target") if not getattr(self, name)]
        unknown = sorted(set(self.ablations) - set(ABLATIONS))
        if unknown:
            problems.append(f"unknown ablation(s) {unknown}; known: {', '.join(ABLATIONS)}")
        problems += problems_of(self)
        if problems:
            raise FinetuneError("invalid transfer config: " + "; ".join(problems))


def transfer_settings(surface: str | None = None) -> tuple[Setting, ...]:
    return settings_of(TransferConfig, surface)
