"""The QLoRA fine-tuning recipe, read top to bottom.

    python -m finetune_core train --model smollm2-135m-instruct --data task.json --max-steps 20

data -> packed rows -> 4-bit base + LoRA -> AdamW loop with eval, checkpoints,
cooperative cancel and exact resume -> a PEFT adapter folder and a manifest.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finetune_core.contracts.hooks import Hooks
from finetune_core.contracts.packing import optimizer_steps
from finetune_core.data.pack import IGNORE, Row, collate
from finetune_core.errors import Cancelled, EmptyDataset, NaNLoss, OutOfMemory
from finetune_core.models.loading import load_tokenizer
from finetune_core.train.callbacks import ProgressEvent, peak_memory_bytes
from finetune_core.train.checkpoint import (
    checkpoint_dir,
    disk_full_reported,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from finetune_core.train.chunked_loss import trained_loss
from finetune_core.train.config import TrainConfig
from finetune_core.train.outputs import save_adapter, write_json, write_manifest
from finetune_core.train.preference import PreferenceObjective, prepare_pairs
from finetune_core.train.setup import build_model, build_optimizer, prepare_rows


@dataclass
class TrainResult:
    status: str  # "succeeded" or "cancelled"
    output_dir: Path
    steps: int
    total_steps: int
    train_loss: float | None = None
    best_val_loss: float | None = None
    best_step: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_rows(rows: list[Row], micro: int, batch_size: int, seed: int) -> list[Row]:
    """The rows of global micro-batch `micro`. A pure function of the step, so
    resuming needs only the step to know the data position."""
    per_epoch = math.ceil(len(rows) / batch_size)
    epoch, index = divmod(micro, per_epoch)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed + epoch))
    return [rows[int(i)] for i in order[index * batch_size : (index + 1) * batch_size]]


def token_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], *, chunk_rows: int | None = None
) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over trained tokens, and how many there were."""
    loss, n = token_loss_sum(model, batch, chunk_rows=chunk_rows)
    return loss / max(n, 1), n


def token_loss_sum(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], *, chunk_rows: int | None = None
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over trained tokens, and how many there were.

    The output layer runs only at positions whose next token is trained (in
    supervised fine-tuning most positions are prompt), and chunk by chunk, so the
    (tokens x vocabulary) logits never exist at once (see chunked_loss).
    """
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.get_decoder()(
        input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
    ).last_hidden_state
    labels = batch["labels"][:, 1:]
    trained = labels != IGNORE
    loss = trained_loss(
        causal_lm.get_output_embeddings(),
        hidden[:, :-1][trained],
        labels[trained],
        # Gemma-style logit soft-capping, as the model's own forward applies it
        softcap=getattr(causal_lm.config, "final_logit_softcapping", None),
        chunk_rows=chunk_rows,
    )
    return loss, int(trained.sum())


def trained_tokens(rows: list[Row]) -> int:
    """Positions whose next token is trained, as token_loss counts them (labels shifted by one)."""
    return sum(sum(label != IGNORE for label in row.labels[1:]) for row in rows)


@torch.no_grad()
def evaluate(model: torch.nn.Module, rows: list[Row], batch_size: int, pad_id: int) -> float | None:
    if not rows:
        return None
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        loss, n = token_loss(model, collate(rows[i : i + batch_size], pad_id))
        total += float(loss) * n
        count += n
    model.train()
    return total / max(count, 1)


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    hooks: Hooks | None = None,
) -> TrainResult:
    """Train. `hooks` (the engine's one protocol, finetune_core/contracts/hooks.py) hear
    progress("train", step, total, the ProgressEvent's dict) and phase("reference", ...);
    their should_stop ends it with a checkpoint and the "cancelled" result."""
    cfg.validate()
    watch = hooks or Hooks()
    should_stop = watch.should_stop

    def emit(event: ProgressEvent) -> None:
        watch.progress("train", event.step, event.total_steps, event.to_dict())

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:  # `resume` reads it back
        with disk_full_reported(out, "writing the run's config"):
            write_json(out / "config.json", cfg.to_dict())
    seed_everything(cfg.seed)

    # 1. Data: read, split, render with the chat template, pack (DPO, SimPO: render pairs).
    tokenizer = load_tokenizer(cfg.model)
    prepare = prepare_pairs if cfg.preference else prepare_rows
    train_rows, val_rows, data_info = prepare(cfg, tokenizer)  # type: ignore[operator]
    if not train_rows:
        raise EmptyDataset(
            f"no training examples left after filtering {cfg.data}: every example was empty, "
            "had no assistant answer with weight 1, or was cut away at max_length"
        )
    val_rows = val_rows[: cfg.max_val_rows]
    pad_id = tokenizer.pad_token_id

    # 2. Model: 4-bit base, LoRA adapter; optimizer and schedule.
    micro_per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    total_steps = run_steps(cfg, len(train_rows))
    model = build_model(cfg)
    optimizer, scheduler = build_optimizer(cfg, model, total_steps)
    # DPO and SimPO score pairs of answers, DPO against a reference (see train/preference.py).
    objective = PreferenceObjective(cfg, model, pad_id) if cfg.preference else None

    # 3. Resume: the latest complete checkpoint restores weights, optimizer, RNG and step.
    step, state = 0, {"history": [], "best_val_loss": None, "best_step": None}
    saved = list_checkpoints(out) if resume else []
    if saved:
        state = load_checkpoint(saved[-1], model=model, optimizer=optimizer, scheduler=scheduler)
        step = state["step"]
        if objective is not None:
            objective.load_state(state)
    history: list[dict[str, Any]] = state["history"]
    ckpt = bool(model.recomputes_activations)
    ckpt_mode = "on" if ckpt else "off"  # what auto chose, as the setting names it
    emit(
        ProgressEvent(
            "start",
            step,
            total_steps,
            message=f"training {cfg.model} from step {step}, gradient checkpointing {ckpt_mode}",
            metrics={"gradient_checkpointing": float(ckpt)},
        )
    )

    def checkpoint(at: int) -> None:
        trainer_state = {k: state[k] for k in ("best_val_loss", "best_step")} | {"history": history}
        trainer_state |= objective.state() if objective is not None else {}
        # A full disk fails the run (DiskFull, resumable) with no half-written checkpoint.
        with disk_full_reported(out, f"saving the checkpoint at step {at}"):
            save_checkpoint(
                checkpoint_dir(out, at),
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                step=at,
                trainer_state=trainer_state,
            )
        prune_checkpoints(out, keep=cfg.keep_checkpoints)
        emit(ProgressEvent("checkpoint", at, total_steps, message=f"saved checkpoint at step {at}"))

    # 4. The loop. Each optimizer step runs grad_accum micro-batches. DPO first takes the
    # reference's log-probabilities of every pair, once (a stop here stops at the loop's top).
    if objective is not None:
        # A phase of its own: train's progress events are steps.
        watch.phase("reference", {"pairs": objective.uncached(train_rows + val_rows)})
        objective.cache_reference(train_rows + val_rows, should_stop)
    model.train()
    started, tokens_seen, last_loss = time.monotonic(), 0, None
    start_step = step
    while step < total_steps:
        if should_stop():
            checkpoint(step)
            emit(ProgressEvent("cancelled", step, total_steps, message=f"cancelled at step {step}"))
            return _result("cancelled", out, step, total_steps, last_loss, state, history)
        try:
            last_loss, n_tokens, metrics = _optimizer_step(
                cfg, model, optimizer, train_rows, step, pad_id, objective
            )
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            raise OutOfMemory(
                f"out of memory at step {step + 1} (batch_size={cfg.batch_size}, max_length="
                f"{cfg.max_length}): lower either, or raise grad_accum"
                + ("" if ckpt else ", or set gradient_checkpointing on")
                + f"; checkpoints so far are kept [{str(exc).splitlines()[0][:200]}]"
            ) from exc
        if not math.isfinite(last_loss):
            raise NaNLoss(
                f"the training loss became {last_loss} at step {step + 1}: lower the learning rate "
                f"(now {cfg.learning_rate}); checkpoints so far are kept"
            )
        scheduler.step()
        step += 1
        tokens_seen += n_tokens
        elapsed = time.monotonic() - started
        rate = tokens_seen / elapsed if elapsed > 0 else 0.0
        eta = elapsed / (step - start_step) * (total_steps - step)
        record = {
            "step": step,
            "train_loss": last_loss,
            "learning_rate": scheduler.get_last_lr()[0],
            **metrics,
        }
        emit(
            ProgressEvent(
                "step",
                step,
                total_steps,
                train_loss=last_loss,
                learning_rate=record["learning_rate"],
                tokens_per_s=rate,
                eta_s=eta,
                peak_memory_bytes=peak_memory_bytes(),
                epoch=step * cfg.grad_accum / micro_per_epoch,
                metrics=metrics or None,
            )
        )
        if val_rows and (step % cfg.eval_every == 0 or step == total_steps):
            if objective is None:
                val_loss, val_metrics = evaluate(model, val_rows, cfg.batch_size, pad_id), {}
            else:
                val_loss, val_metrics = objective.evaluate(val_rows)
            val_metrics = {f"val_{k}": v for k, v in val_metrics.items()}
            record |= {"val_loss": val_loss, **val_metrics}
            msg = f"step {step}: validation loss {val_loss:.4f}"
            if state["best_val_loss"] is None or val_loss < state["best_val_loss"]:
                state["best_val_loss"], state["best_step"] = val_loss, step
                with disk_full_reported(out, f"saving the best adapter at step {step}"):
                    save_adapter(model, tokenizer, out / "best")
                msg += " (best so far, saved)"
            emit(
                ProgressEvent(
                    "eval",
                    step,
                    total_steps,
                    val_loss=val_loss,
                    message=msg,
                    metrics=val_metrics or None,
                )
            )
        history.append(record)
        if step % cfg.save_every == 0 and step < total_steps:
            checkpoint(step)

    # 5. Outputs: the last checkpoint, the final adapter and the manifest.
    checkpoint(step)
    final = "best" if cfg.final == "best" and (out / "best").exists() else "last"
    result = _result("succeeded", out, step, total_steps, last_loss, state, history)
    with disk_full_reported(out, "writing the final adapter and manifest"):
        save_adapter(model, tokenizer, out / "last")
        # The manifest says what the run did: auto's choice, on or off.
        done_cfg = replace(cfg, gradient_checkpointing=ckpt_mode)
        write_manifest(done_cfg, out, final=final, data_info=data_info, result=result.__dict__)
    emit(
        ProgressEvent(
            "done",
            step,
            total_steps,
            train_loss=last_loss,
            message=f"adapter saved to {out / 'adapter'}",
        )
    )
    return result


# CUDA raises OutOfMemoryError; the CPU allocator and oneDNN (which fails to build a
# primitive when its scratch memory cannot be had) raise RuntimeErrors.
OOM_MARKERS = ("can't allocate memory", "out of memory", "could not create a primitive")


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or any(m in str(exc) for m in OOM_MARKERS)


def _optimizer_step(
    cfg: TrainConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rows: list[Row],
    step: int,
    pad_id: int,
    objective: PreferenceObjective | None = None,
) -> tuple[float, int, dict[str, float]]:
    """One optimizer step over grad_accum micro-batches; returns the loss and tokens, as
    accumulate_gradients does, and the preference metrics (none in supervised runs)."""
    micro_batches = step_micro_batches(cfg, rows, step)
    if objective is None:
        (loss, tokens), metrics = accumulate_gradients(model, micro_batches, pad_id), {}
    else:
        loss, tokens, metrics = objective.accumulate(micro_batches)  # type: ignore[arg-type]
    if cfg.grad_clip > 0:
        params = [p for p in model.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, tokens, metrics


def run_steps(cfg: TrainConfig, rows: int) -> int:
    """The optimizer steps a run of `cfg` takes over `rows` training rows."""
    return optimizer_steps(
        rows,
        batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum,
        epochs=cfg.epochs,
        max_steps=cfg.max_steps,
    )


def step_micro_batches(cfg: TrainConfig, rows: list[Row], step: int) -> list[list[Row]]:
    """The grad_accum micro-batches of optimizer step `step`."""
    first = step * cfg.grad_accum
    return [batch_rows(rows, first + k, cfg.batch_size, cfg.seed) for k in range(cfg.grad_accum)]


def accumulate_gradients(
    model: torch.nn.Module, micro_batches: list[list[Row]], pad_id: int
) -> tuple[float, int]:
    """Backpropagate the mean loss over every trained token of all micro-batches.

    Each micro-batch's summed loss is divided by the trained tokens of the whole
    step (known from the labels before any forward pass), so every token weighs
    the same however the micro-batches split them: averaging per-micro-batch means
    would weigh the tokens of a sparse micro-batch more. Returns that mean loss and
    the real (non-padding) tokens processed, which is what throughput figures count.
    """
    n_trained = max(sum(trained_tokens(micro) for micro in micro_batches), 1)
    total = 0.0
    for micro in micro_batches:
        loss, _ = token_loss_sum(model, collate(micro, pad_id))
        (loss / n_trained).backward()
        total += float(loss.detach())
    return total / n_trained, sum(len(row) for micro in micro_batches for row in micro)


def _result(
    status: str, out: Path, step: int, total: int, loss: float | None, state: dict, history: list
) -> TrainResult:
    return TrainResult(
        status=status,
        output_dir=out,
        steps=step,
        total_steps=total,
        train_loss=loss,
        best_val_loss=state["best_val_loss"],
        best_step=state["best_step"],
        history=history,
    )


__all__ = ["Cancelled", "TrainResult", "train"]
