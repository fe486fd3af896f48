"""Logit distillation for Trans-LoRA, when source and target share a tokenizer.

Sequence-level distillation (train on the teacher's greedy text) is the default and works
across tokenizers. With one vocabulary, the teacher's whole next-token distribution at
every answer position carries more signal per example:

1. Each (synthetic input, teacher answer) pair is rendered with the *target's* chat
   template; the teacher (source base + adapter) runs over the same ids and keeps the
   top-k log-probabilities per trained position, renormalised over those k (the full
   vocabulary would be 49k-262k floats per token).
2. The student (a fresh LoRA on the target, built and optimised exactly as `train()`
   does) minimises `alpha * CE(labels) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)`
   over the trained positions only.

The loop is small and separate because `train()`'s loss is owned by the training code;
model, optimizer, schedule, rendering and adapter saving are the recipe's own helpers.
"""

from __future__ import annotations

import gc
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from finetune_core.contracts.layout import ADAPTER, MANIFEST
from finetune_core.data import Example
from finetune_core.data.pack import IGNORE, Row, collate, pack
from finetune_core.data.render import render_example
from finetune_core.errors import FinetuneError
from finetune_core.transfer.hooks import Hooks, TransferStopped


def shares_tokenizer(source: str, target: str) -> bool:
    """Same vocabulary (token -> id), so teacher and student distributions line up."""
    from finetune_core.models.loading import load_tokenizer

    return load_tokenizer(source).get_vocab() == load_tokenizer(target).get_vocab()


@dataclass
class TeacherTargets:
    """Top-k token ids and renormalised log-probs at each trained position of one row."""

    ids: torch.Tensor  # (n_trained, k) long
    logprobs: torch.Tensor  # (n_trained, k) float


def _trained_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits at the positions whose next token is trained, row-major (as token_loss)."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.get_decoder()(
        input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
    ).last_hidden_state
    trained = batch["labels"][:, 1:] != IGNORE
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][trained]).float()
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


@torch.no_grad()
def teacher_targets(
    teacher: torch.nn.Module, rows: Sequence[Row], pad_id: int, k: int = 20
) -> list[TeacherTargets]:
    """The teacher's top-k next-token distribution at every trained position of each row."""
    teacher.eval()
    out = []
    for row in rows:
        logp = torch.log_softmax(_trained_logits(teacher, collate([row], pad_id)), dim=-1)
        top = logp.topk(min(k, logp.shape[-1]), dim=-1)
        renormalised = top.values - torch.logsumexp(top.values, dim=-1, keepdim=True)
        out.append(TeacherTargets(ids=top.indices.cpu(), logprobs=renormalised.cpu()))
    return out


def distill_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    targets: TeacherTargets,
    *,
    alpha: float = 0.5,
    temperature: float = 2.0,
) -> tuple[torch.Tensor, float]:
    """alpha * CE + (1 - alpha) * T^2 * KL(teacher^T || student^T) over the top-k support;
    returns the loss and the KL term (for reporting)."""
    ce = torch.nn.functional.cross_entropy(logits, labels)
    ids = targets.ids.to(logits.device)
    teacher = torch.softmax(targets.logprobs.to(logits.device) / temperature, dim=-1)
    student = torch.log_softmax(logits / temperature, dim=-1).gather(-1, ids)
    kl = (teacher * (torch.log(teacher.clamp_min(1e-12)) - student)).sum(-1).mean()
    return alpha * ce + (1 - alpha) * temperature**2 * kl, float(kl.detach())


def _merge(targets: Sequence[TeacherTargets]) -> TeacherTargets:
    return TeacherTargets(
        ids=torch.cat([t.ids for t in targets]), logprobs=torch.cat([t.logprobs for t in targets])
    )


def train_logit_student(
    cfg: Any,
    examples: list[Example],
    *,
    teacher_model: str,
    teacher_adapter: str | None,
    folder: Path,
    hooks: Hooks | None = None,
    name: str = "transferred",
    alpha: float = 0.5,
    temperature: float = 2.0,
    top_k: int = 20,
) -> dict[str, Any]:
    """Train a student LoRA on cfg.target with the KL + CE loss; the adapter lands in
    `folder/adapter` (a plain PEFT folder). `cfg` is a TransferConfig."""
    from finetune_core.infer import load_chat_model
    from finetune_core.models.loading import load_tokenizer
    from finetune_core.train import TrainConfig
    from finetune_core.train.outputs import save_adapter, write_json
    from finetune_core.train.setup import build_model, build_optimizer

    hooks = hooks or Hooks()
    if not shares_tokenizer(teacher_model, cfg.target):
        raise FinetuneError(
            f"logit distillation needs one tokenizer: {teacher_model} and {cfg.target} have "
            "different vocabularies; use sequence-level distillation"
        )
    tokenizer = load_tokenizer(cfg.target)
    pad = tokenizer.pad_token_id
    rows = pack([render_example(tokenizer, e) for e in examples], cfg.max_length, packing=False)
    if not rows:
        raise FinetuneError("no distillation pair has an answer to learn from")
    teacher = load_chat_model(teacher_model, adapter=teacher_adapter, quantization=cfg.quantization)
    targets = teacher_targets(teacher.model, rows, pad, k=top_k)
    del teacher
    gc.collect()

    train_cfg = TrainConfig(
        model=cfg.target,
        data="-",  # rows are built above; the recipe's helpers only read model/optimiser fields
        output_dir=str(folder),
        quantization=cfg.quantization,
        target_modules=cfg.target_modules,
        lora_r=cfg.lora_r,
        lora_alpha=2 * cfg.lora_r,
        learning_rate=cfg.learning_rate,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    torch.manual_seed(cfg.seed)
    per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = cfg.max_steps or per_epoch * cfg.epochs
    model = build_model(train_cfg)
    optimizer, scheduler = build_optimizer(train_cfg, model, total)
    model.train()
    order: list[int] = []
    rng = random.Random(cfg.seed)
    history = []
    for step in range(1, total + 1):
        if hooks.should_stop():
            raise TransferStopped(f"train_{name}", {"student_steps": step - 1})
        if not order:
            order = list(range(len(rows)))
            rng.shuffle(order)
        picked, order = order[: cfg.batch_size], order[cfg.batch_size :]
        batch = collate([rows[i] for i in picked], pad)
        logits = _trained_logits(model, batch)
        labels = batch["labels"][:, 1:][batch["labels"][:, 1:] != IGNORE].to(logits.device)
        loss, kl = distill_loss(
            logits,
            labels,
            _merge([targets[i] for i in picked]),
            alpha=alpha,
            temperature=temperature,
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        history.append({"step": step, "loss": float(loss.detach()), "kl": kl})
        hooks.progress("train", step, total, {"student": name, "train_loss": float(loss.detach())})
    folder.mkdir(parents=True, exist_ok=True)
    save_adapter(model, tokenizer, folder / ADAPTER)
    summary = {
        "base_model": cfg.target,
        "distillation": "logits",
        "teacher": {"model": teacher_model, "adapter": teacher_adapter},
        "alpha": alpha,
        "temperature": temperature,
        "top_k": top_k,
        "rows": len(rows),
        "steps": total,
        "history": history,
    }
    write_json(folder / MANIFEST, summary)
    return summary
