"""Trans-LoRA transfer (Wang et al., NeurIPS 2024): move a LoRA adapter to a new base
model without the customer's data, from the k seeds and the discriminator kept beside
the source adapter.

    seeds -> target model writes candidate inputs (few-shot list prompt, sampled)
          -> discriminator keeps those it calls real
          -> source base + adapter answers each (greedy): the teacher outputs
          -> a new QLoRA adapter on the target learns (input, teacher answer)
          -> exact match of source, target base and transferred adapter

Distillation is sequence-level (train on the teacher's text), so it works across
tokenizers. Logit distillation (KL to the teacher's token distributions), possible
only when source and target share a tokenizer, is not built: see README.md here.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune_core.data import Example, Message, read_examples, to_chat_jsonl
from finetune_core.errors import FinetuneError
from finetune_core.transfer.discriminator import load_discriminator, read_info
from finetune_core.transfer.report import evaluate_chat, format_table
from finetune_core.transfer.sampling import SamplingResult, synthesize
from finetune_core.transfer.seeds import load_seeds, task_input
from finetune_core.transfer.source import QV, run_adapter, run_config, run_splits

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
    n_synthetic: int = 250
    max_attempts: int | None = None  # candidates sampled at most; default 4 * n_synthetic
    filtered: bool = True  # False: no discriminator (the "unfiltered" ablation as main run)
    ablations: tuple[str, ...] = ()  # extra students: "unfiltered", "seeds_only"
    temperature: float = 1.0
    top_p: float = 0.95
    sample_batch: int = 8
    sample_max_new_tokens: int = 96
    teacher_max_new_tokens: int = 64
    include_seeds: bool = True  # the seeds (real answers) join the distillation set
    # Student: the paper's LoRA on q, v.
    epochs: int = 3
    max_steps: int | None = None
    learning_rate: float = 2e-4
    lora_r: int = 8
    target_modules: list[str] | str = field(default_factory=lambda: list(QV))
    batch_size: int = 8
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
        if not self.temperature > 0:
            raise FinetuneError("sampling needs temperature > 0")


@contextmanager
def _phase(
    times: dict[str, float], name: str, log: Callable[[str], None] | None = None
) -> Iterator[None]:
    started = time.monotonic()
    if log:
        log(f"{name} ...")
    try:
        yield
    finally:
        times[name] = round(time.monotonic() - started, 2)
        gc.collect()  # each phase drops its models before the next loads
        if log:
            log(f"{name}: {times[name]:.1f}s")


def eval_examples(cfg: TransferConfig) -> list[Example]:
    if cfg.eval_data:
        examples = list(read_examples(cfg.eval_data))
    else:
        examples = run_splits(cfg.run)[1]
    if not examples:
        raise FinetuneError("no held-out examples to evaluate on: give an eval file")
    return examples[: cfg.eval_limit] if cfg.eval_limit else examples


def distillation_examples(
    inputs: list[str], answers: list[str], seeds: list[Example] | None = None
) -> list[Example]:
    """(synthetic input -> teacher answer) chat pairs; empty answers teach nothing."""
    pairs = [
        Example(messages=(Message("user", x), Message("assistant", a)), line=i + 1)
        for i, (x, a) in enumerate(zip(inputs, answers, strict=True))
        if a.strip()
    ]
    return pairs + list(seeds or [])


def teacher_answers(
    chat: Any, inputs: list[str], max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    from finetune_core.infer import generate

    out: list[str] = []
    for start in range(0, len(inputs), batch_size):
        batch = [[{"role": "user", "content": x}] for x in inputs[start : start + batch_size]]
        out += [g.text.strip() for g in generate(chat, batch, max_new_tokens=max_new_tokens)]
    return out


def _train_student(cfg: TransferConfig, examples: list[Example], folder: Path) -> Path:
    from finetune_core.train import TrainConfig, train

    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "distill.jsonl"
    to_chat_jsonl(examples, data)
    train(
        TrainConfig(
            model=cfg.target,
            data=str(data),
            data_format="chat",
            output_dir=str(folder),
            quantization=cfg.quantization,  # type: ignore[arg-type]
            target_modules=cfg.target_modules,
            lora_r=cfg.lora_r,
            lora_alpha=2 * cfg.lora_r,
            learning_rate=cfg.learning_rate,
            epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            val_fraction=0.0,  # no real data to validate on; the report evaluates
            seed=cfg.seed,
        )
    )
    return folder / "adapter"


def transfer(cfg: TransferConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every phase; write `<output_dir>/report.json` and return the report.
    `log` hears each phase's start and duration."""
    from finetune_core.infer import load_chat_model

    cfg.validate()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = Path(cfg.run)
    source, source_adapter = run_config(run)["model"], str(run_adapter(run))
    seeds = load_seeds(run / "transfer")
    seed_inputs = [task_input(s) for s in seeds]
    held_out = eval_examples(cfg)
    need_unfiltered = not cfg.filtered or "unfiltered" in cfg.ablations
    times: dict[str, float] = {}
    accuracy: dict[str, Any] = {}
    quant = cfg.quantization

    def sample(chat: Any, discriminator: Any, seed: int) -> SamplingResult:
        return synthesize(
            chat,
            seed_inputs,
            cfg.n_synthetic,
            discriminator=discriminator,
            shots=len(seed_inputs),
            max_attempts=cfg.max_attempts,
            batch_size=cfg.sample_batch,
            max_new_tokens=cfg.sample_max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=seed,
        )

    # 1. The target writes candidates; the discriminator (on the source base) filters.
    target_chat = load_chat_model(cfg.target, quantization=quant)
    filtered = unfiltered = None
    if cfg.filtered:
        with _phase(times, "synthesize", log):
            disc = load_discriminator(run / "discriminator", quantization=quant)
            filtered = sample(target_chat, disc, cfg.seed)
            del disc
    if need_unfiltered:
        with _phase(times, "synthesize_unfiltered", log):
            unfiltered = sample(target_chat, None, cfg.seed + 1)
    with _phase(times, "eval_target_base", log):
        accuracy["target_base"] = evaluate_chat(
            target_chat, held_out, max_new_tokens=cfg.eval_max_new_tokens
        )
        del target_chat
    main = filtered if cfg.filtered else unfiltered
    assert main is not None
    if not main.accepted:
        raise FinetuneError(
            f"no synthetic input accepted in {main.attempts} attempts: raise the attempt "
            "budget or the temperature, or transfer --unfiltered"
        )

    # 2. The teacher (source base + adapter) answers; it is evaluated while loaded.
    with _phase(times, "teacher", log):
        teacher = load_chat_model(source, adapter=source_adapter, quantization=quant)
        answers = teacher_answers(teacher, main.accepted, cfg.teacher_max_new_tokens)
        extra = []
        if cfg.filtered and unfiltered is not None:
            extra = teacher_answers(teacher, unfiltered.accepted, cfg.teacher_max_new_tokens)
    with _phase(times, "eval_source", log):
        accuracy["source_adapter"] = evaluate_chat(
            teacher, held_out, max_new_tokens=cfg.eval_max_new_tokens
        )
        del teacher

    # 3. Students on the target, then their evaluation.
    kept = seeds if cfg.include_seeds else []
    students = {"transferred": distillation_examples(main.accepted, answers, kept)}
    if cfg.filtered and unfiltered is not None:
        students["ablation_unfiltered"] = distillation_examples(unfiltered.accepted, extra, kept)
    if "seeds_only" in cfg.ablations:
        students["ablation_seeds_only"] = list(seeds)
    adapters: dict[str, str] = {}
    for name, examples in students.items():
        with _phase(times, f"train_{name}", log):
            adapters[name] = str(_train_student(cfg, examples, out / name))
        with _phase(times, f"eval_{name}", log):
            chat = load_chat_model(cfg.target, adapter=adapters[name], quantization=quant)
            accuracy[name] = evaluate_chat(chat, held_out, max_new_tokens=cfg.eval_max_new_tokens)
            del chat

    pairs = students["transferred"]
    report = {
        "source_model": source,
        "source_adapter": source_adapter,
        "target_model": cfg.target,
        "task": read_info(run / "discriminator")["task"] if cfg.filtered else None,
        "adapter": adapters["transferred"],
        "adapters": adapters,
        "accuracy": {k: accuracy[k] for k in ORDER if k in accuracy},
        "synthesis": main.to_dict(),
        "synthesis_unfiltered": unfiltered.to_dict() if unfiltered and cfg.filtered else None,
        "distillation_pairs": len(pairs),
        "sample_pairs": [
            {"input": e.messages[0].content, "teacher": e.messages[1].content} for e in pairs[:5]
        ],
        "seeds": seed_inputs,
        "eval_examples": len(held_out),
        "phase_seconds": times,
        "config": asdict(cfg),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return report


__all__ = ["ABLATIONS", "TransferConfig", "format_table", "transfer"]
