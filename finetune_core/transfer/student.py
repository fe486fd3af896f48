"""The student side of a transfer: the teacher's answers to the synthetic inputs, the
(input, answer) pairs, and a QLoRA student on the target trained on them with the same
recipe as ordinary fine-tuning (or with logit distillation, distill.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_core.contracts.layout import ADAPTER
from finetune_core.data import Example, Message, to_chat_jsonl
from finetune_core.transfer.hooks import Hooks, TransferStopped

if TYPE_CHECKING:
    from finetune_core.transfer.config import TransferConfig


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
) -> tuple[list[str], list[float]]:
    """Greedy answers of the teacher, and how sure it was of each: the mean log-probability
    of the answer's tokens as it wrote them (0 is certain, an empty answer -inf). Its wrong
    answers score lower: on 2-digit sums the mean told right from wrong with an AUC of
    0.82 (benchmarks/results/transfer_history.md). Stopping between batches raises TransferStopped."""
    from finetune_core.infer import generate

    hooks = hooks or Hooks()
    out: list[str] = []
    sure: list[float] = []
    hooks.progress("teacher", 0, len(inputs), {})
    for start in range(0, len(inputs), batch_size):
        if hooks.should_stop():
            raise TransferStopped("teacher", {"teacher_answered": len(out)})
        batch = [[{"role": "user", "content": x}] for x in inputs[start : start + batch_size]]
        for g in generate(chat, batch, max_new_tokens=max_new_tokens, logprobs=True):
            out.append(g.text.strip())
            sure.append(g.logprob if g.text.strip() else float("-inf"))
        hooks.progress("teacher", len(out), len(inputs), {})
    return out, sure


def answer_confidence(
    chat: Any,
    inputs: list[str],
    answers: list[str],
    batch_size: int = 8,
    hooks: Hooks | None = None,
) -> list[float]:
    """How sure the teacher is of given answers: the mean log-probability of the answer's
    tokens after the chat prompt, teacher-forced (0 is certain; an empty answer gets
    -inf). For answers a run saved before teacher_answers measured it while writing."""
    import torch

    from finetune_core.data.render import render_prompt
    from finetune_core.infer.generate import left_pad

    tok, model = chat.tokenizer, chat.model
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(inputs), batch_size):
        end = start + batch_size
        pairs = list(zip(inputs[start:end], answers[start:end], strict=True))
        prompts = [render_prompt(tok, [Message("user", x)]) for x, _ in pairs]
        replies = [tok(a, add_special_tokens=False)["input_ids"] for _, a in pairs]
        ids, mask = left_pad(
            [p + r for p, r in zip(prompts, replies, strict=True)], tok.pad_token_id
        )
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        width = ids.shape[1]
        for row, reply in enumerate(replies):
            if not reply:
                out.append(float("-inf"))
                continue
            # Left-padded: the reply is the row's last len(reply) tokens.
            scores = logits[row, width - len(reply) - 1 : width - 1].float().log_softmax(-1)
            picked = scores.gather(1, torch.tensor(reply, device=device)[:, None])
            out.append(picked.mean().item())
        if hooks is not None:
            hooks.progress("teacher", len(out), len(inputs), {"key": "confidence"})
    return out


def most_confident(confidence: list[float], keep: float) -> list[int]:
    """Indices, in their order, of the `keep` share of answers the teacher is surest of."""
    if keep >= 1.0:
        return list(range(len(confidence)))
    n = max(1, round(keep * len(confidence))) if confidence else 0
    ranked = sorted(range(len(confidence)), key=lambda i: (-confidence[i], i))
    return sorted(ranked[:n])


def confident_pairs(
    inputs: list[str],
    answers: list[str],
    confidence: list[float],
    keep: float,
    seeds: list[Example] | None = None,
) -> list[Example]:
    """The distillation pairs of the answers the teacher is surest of, then the seeds."""
    chosen = most_confident(confidence, keep)
    return distillation_examples([inputs[i] for i in chosen], [answers[i] for i in chosen], seeds)


def teacher_filter(
    inputs: list[str], answers: list[str], confidence: list[float], keep: float, sample: int = 5
) -> dict[str, Any]:
    """For the report: the share kept, how many, and the least sure answers left out."""
    chosen = set(most_confident(confidence, keep))
    dropped = sorted(
        (i for i in range(len(answers)) if i not in chosen), key=confidence.__getitem__
    )
    return {
        "keep": keep,
        "kept": len(chosen),
        "answers": len(answers),
        "sample_dropped": [
            {"input": inputs[i], "teacher": answers[i], "confidence": round(confidence[i], 3)}
            for i in dropped[:sample]
        ],
    }


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
        return folder / ADAPTER
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "distill.jsonl"
    to_chat_jsonl(examples, data)

    def on_event(phase: str, step: int, total: int | None, event: dict[str, Any]) -> None:
        info = {"student": name, "train_loss": event.get("train_loss")}
        hooks.progress("train", step, total, info)

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
        hooks=Hooks(progress=on_event, should_stop=hooks.should_stop),
        resume=resume,
    )
    if result.status == "cancelled":
        raise TransferStopped(f"train_{name}", {})
    return folder / ADAPTER
