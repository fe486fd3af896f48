"""The training configurations that `make bench-train` compares, one per process.

Every configuration trains the same 4-bit base with the same fresh LoRA
(`build_model`), on the same rendered examples with the same loss masks (loss on
the assistant's tokens only), for the same number of optimizer steps with the
same AdamW, learning rate, cosine schedule and gradient clipping, and about the
same tokens per step. Each returns what it measured:

- `seconds`: the training loop, from its start to the end of the last step;
- `tokens` / `trained_tokens`: non-padding tokens fed to the model and tokens
  with a loss, over those steps;
- `losses`: the training loss of every step (mean over that step's trained tokens);
- `peak_memory_bytes`: the process's peak RSS (peak CUDA memory on a GPU).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import torch

CONFIGS = ("stock_padding", "stock_flattening", "trl_packing", "ours", "ours_checkpointed")
OURS = ("ours", "ours_checkpointed")  # ours_checkpointed: gradient checkpointing forced on


def train_config(args: argparse.Namespace, out: str) -> Any:
    """Our TrainConfig for the bench; the stock configurations read their settings from it."""
    from finetune_core.data import bigbench_task_path
    from finetune_core.train import TrainConfig

    return TrainConfig(
        model=args.model, data=str(bigbench_task_path(args.task)), output_dir=out,
        limit_examples=args.examples, val_fraction=0.0, batch_size=args.batch_size,
        max_length=args.max_length, max_steps=args.steps, learning_rate=2e-4, lora_r=16,
        lora_alpha=32, target_modules="all-linear", warmup_ratio=0.0, weight_decay=0.0,
        lr_scheduler="cosine", optimizer="adamw", grad_accum=1, save_every=10**6,
        eval_every=10**6, seed=0,
    )  # fmt: skip


def run(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train configuration `name` and return its measurements."""
    from finetune_core.kernels import ops
    from finetune_core.train.callbacks import peak_memory_bytes

    # Build or load our NF4 kernels now: a first build takes minutes, which no
    # configuration's clock should see.
    ops.load_extension()
    with tempfile.TemporaryDirectory() as out:
        cfg = train_config(args, out)
        if name == "ours_checkpointed":
            cfg.gradient_checkpointing = "on"
        result = _run_ours(cfg) if name in OURS else _run_stock(name, cfg, args)
    return result | {"config": name, "peak_memory_bytes": peak_memory_bytes()}


def _run_ours(cfg: Any) -> dict[str, Any]:
    from finetune_core.contracts.hooks import Hooks
    from finetune_core.train import train

    marks: dict[str, float] = {}
    losses: list[float] = []
    rates: list[float] = []

    def clock(phase: str, step: int, total: int | None, event: dict[str, Any]) -> None:
        if event["kind"] == "start":
            marks["start"] = time.perf_counter()
            marks["checkpointing"] = event["gradient_checkpointing"]
        elif event["kind"] == "step":
            marks["end"] = time.perf_counter()
            losses.append(float(event["train_loss"]))
            rates.append(float(event["tokens_per_s"]))

    result = train(cfg, hooks=Hooks(progress=clock))
    seconds = marks["end"] - marks["start"]
    # The recipe reports its rate as real tokens seen / time since its loop began,
    # which is this clock's interval to within microseconds.
    return {"seconds": seconds, "steps": result.steps, "tokens": round(rates[-1] * seconds),
            "trained_tokens": None, "losses": losses,
            "gradient_checkpointing": bool(marks["checkpointing"])}  # fmt: skip


def stock_examples(cfg: Any) -> list[dict[str, list[int]]]:
    """The examples our recipe trains on, rendered and cut to max_length the same way."""
    from finetune_core.data import read_examples
    from finetune_core.data.pack import truncate
    from finetune_core.data.render import render_example
    from finetune_core.models import load_tokenizer

    tok = load_tokenizer(cfg.model)
    examples = list(read_examples(cfg.data))[: cfg.limit_examples]
    rendered = truncate([render_example(tok, ex) for ex in examples], cfg.max_length)
    return [{"input_ids": r.input_ids, "labels": r.labels} for r in rendered]


def _run_stock(name: str, cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    from finetune_core.models import load_tokenizer
    from finetune_core.train.setup import build_model

    tok = load_tokenizer(cfg.model)
    data = stock_examples(cfg)
    # The same 4-bit base + LoRA as ours, with peft's own dropout, and checkpointing on
    # as peft's prepare_model_for_kbit_training turns it on by default.
    cfg.gradient_checkpointing = "on"
    model = build_model(cfg, fused_dropout=False)
    meter = _Meter()
    model.register_forward_pre_hook(meter.count, with_kwargs=True)
    common = _training_arguments(cfg, examples_per_step=args.stock_batch)
    if name == "trl_packing":
        trainer = _trl_trainer(model, tok, data, common, cfg)
    else:
        trainer = _hf_trainer(name, model, tok, data, common)
    trainer.add_callback(meter.callback())
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"seconds": meter.end - meter.start, "steps": trainer.state.global_step,
            "tokens": meter.tokens, "trained_tokens": meter.trained,
            "losses": losses}  # fmt: skip


def _training_arguments(cfg: Any, *, examples_per_step: int) -> dict[str, Any]:
    """TrainingArguments shared by the stock configurations (SFTConfig takes them too)."""
    return dict(
        per_device_train_batch_size=examples_per_step, gradient_accumulation_steps=1,
        max_steps=cfg.max_steps, learning_rate=cfg.learning_rate, lr_scheduler_type="cosine",
        warmup_steps=0, weight_decay=cfg.weight_decay, optim="adamw_torch",
        max_grad_norm=cfg.grad_clip, logging_steps=1, save_strategy="no", report_to=[],
        seed=cfg.seed, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        remove_unused_columns=False, bf16=False, fp16=False, disable_tqdm=True,
        # build_model already set checkpointing up, as our recipe has it
        gradient_checkpointing=False,
    )  # fmt: skip


def _hf_trainer(name: str, model: Any, tok: Any, data: list, common: dict) -> Any:
    from transformers import (
        DataCollatorForSeq2Seq,
        DataCollatorWithFlattening,
        Trainer,
        TrainingArguments,
    )

    if name == "stock_padding":
        collator = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
        data = [d | {"attention_mask": [1] * len(d["input_ids"])} for d in data]
    else:  # one row per batch, position_ids restarting at every example
        collator = DataCollatorWithFlattening()
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(output_dir=out, **common)
    return Trainer(model=model, args=targs, train_dataset=data, data_collator=collator)


def _trl_trainer(model: Any, tok: Any, data: list, common: dict, cfg: Any) -> Any:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    with tempfile.TemporaryDirectory() as out:
        # Packed rows of max_length, `batch_size` rows per step, as ours. Best-fit
        # decreasing packing is padding-free (position_ids restart per example).
        targs = SFTConfig(
            output_dir=out, **common | {"per_device_train_batch_size": cfg.batch_size},
            packing=True, packing_strategy="bfd", padding_free=True, max_length=cfg.max_length,
            dataset_num_proc=None, completion_only_loss=False,
        )  # fmt: skip
    trainer = SFTTrainer(
        model=model, args=targs, train_dataset=Dataset.from_list(data), processing_class=tok
    )
    # SFTTrainer casts the adapter of a 4-bit model to bf16 (QLoRA paper); the other
    # configurations train it in fp32, so put it back for the same model.
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return trainer


class _Meter:
    """Counts what the model is fed and clocks the training loop of a Trainer."""

    def __init__(self) -> None:
        self.tokens = self.trained = 0
        self.start = self.end = 0.0

    def count(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if ids is None or not module.training:
            return
        self.tokens += int(mask.sum()) if mask is not None else ids.numel()
        labels = kwargs.get("labels")
        if labels is not None:  # the model shifts labels by one; the first is never trained
            self.trained += int((labels[..., 1:] != -100).sum())

    def callback(self) -> Any:
        from transformers import TrainerCallback

        meter = self

        class Clock(TrainerCallback):
            def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
                meter.start = time.perf_counter()

            def on_step_end(self, *args: Any, **kwargs: Any) -> None:
                meter.end = time.perf_counter()

        return Clock()
