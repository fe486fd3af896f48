"""The student side of a transfer: the teacher's answers to the synthetic inputs, the
(input, answer) pairs, and a QLoRA student on the target trained on them with the same
recipe as ordinary fine-tuning (or with logit distillation, distill.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_core.data import Example, Message, to_chat_jsonl
from finetune_core.transfer.hooks import Hooks, TransferStopped

if TYPE_CHECKING:
    from finetune_core.transfer.pipeline import TransferConfig


def parse_target_modules(text: str | None) -> str | list[str] | None:
    """A comma list of layer names, "all-linear", or None / "" for the source adapter's."""
    return text if text in (None, "all-linear") else (text.split(",") if text else None)


def with_source_shape(cfg: TransferConfig, source_config: dict[str, Any]) -> TransferConfig:
    """The config with a rank or LoRA targets left unset taken from the source run's, so
    the student can hold what the source adapter held."""
    from finetune_core.train import TrainConfig

    return replace(
        cfg,
        lora_r=cfg.lora_r or source_config.get("lora_r") or TrainConfig.lora_r,
        target_modules=cfg.target_modules
        or source_config.get("target_modules")
        or TrainConfig.target_modules,
    )


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
    chat: Any,
    inputs: list[str],
    max_new_tokens: int,
    batch_size: int = 8,
    hooks: Hooks | None = None,
) -> list[str]:
    """Greedy answers of the teacher; stopping between batches raises TransferStopped."""
    from finetune_core.infer import generate

    hooks = hooks or Hooks()
    out: list[str] = []
    hooks.progress("teacher", 0, len(inputs), {})
    for start in range(0, len(inputs), batch_size):
        if hooks.should_stop():
            raise TransferStopped("teacher", {"teacher_answered": len(out)})
        batch = [[{"role": "user", "content": x}] for x in inputs[start : start + batch_size]]
        out += [g.text.strip() for g in generate(chat, batch, max_new_tokens=max_new_tokens)]
        hooks.progress("teacher", len(out), len(inputs), {})
    return out


def train_student(
    cfg: TransferConfig,
    examples: list[Example],
    folder: Path,
    hooks: Hooks,
    name: str,
    teacher: tuple[str, str],
    resume: bool = False,
) -> Path:
    """The student's adapter folder. `resume` continues a stopped sequence-level run from
    its latest checkpoint; a stopped logit-distillation run starts again."""
    from finetune_core.train import TrainConfig, train

    if cfg.distillation == "logits":
        from finetune_core.transfer.distill import train_logit_student

        model, adapter = teacher
        train_logit_student(
            cfg,
            examples,
            teacher_model=model,
            teacher_adapter=adapter,
            folder=folder,
            hooks=hooks,
            name=name,
            alpha=cfg.logit_alpha,
            temperature=cfg.logit_temperature,
        )
        return folder / "adapter"
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "distill.jsonl"
    to_chat_jsonl(examples, data)

    def on_event(event: Any) -> None:
        info = {"student": name, "train_loss": event.train_loss}
        hooks.progress("train", event.step, event.total_steps, info)

    result = train(
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
        ),
        callback=on_event,
        should_stop=hooks.should_stop,
        resume=resume,
    )
    if result.status == "cancelled":
        raise TransferStopped(f"train_{name}", {})
    return folder / "adapter"
