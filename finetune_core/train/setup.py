"""Building blocks the recipe calls: rows from data, the adapted model, the optimizer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from finetune_core.contracts.layout import ADAPTER, ADAPTER_CONFIG
from finetune_core.contracts.train import resolve_target_modules
from finetune_core.data.pack import Row, pack
from finetune_core.data.render import render_example
from finetune_core.data.types import PreferenceExample
from finetune_core.errors import DataError, FinetuneError
from finetune_core.models.loading import load_model
from finetune_core.train.config import TrainConfig
from finetune_core.train.lora_dropout import fuse_lora_dropout
from finetune_core.train.memory import use_checkpointing

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def prepare_rows(
    cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[Row], list[Row], dict[str, Any]]:
    """Read, split, render and pack; returns train rows, validation rows and data facts."""
    from finetune_core.data import read_examples, train_val_split
    from finetune_core.train.outputs import file_sha256

    examples = list(read_examples(cfg.data, fmt=cfg.data_format, column_map=cfg.column_map))
    if examples and isinstance(examples[0], PreferenceExample):
        raise DataError(
            f"{cfg.data} holds preference pairs: train them with training_method dpo or simpo",
            code="preference_data",
        )
    if cfg.limit_examples:
        examples = examples[: cfg.limit_examples]
    if cfg.val_data:
        train_ex = examples
        val_ex = list(read_examples(cfg.val_data, fmt=cfg.data_format, column_map=cfg.column_map))
    else:
        train_ex, val_ex = train_val_split(examples, val_fraction=cfg.val_fraction, seed=cfg.seed)
    train_r = [render_example(tokenizer, ex) for ex in train_ex]
    val_r = [render_example(tokenizer, ex) for ex in val_ex]
    train_rows = pack(train_r, cfg.max_length, packing=cfg.packing)
    # Validation rows are never packed, so the loss per example is comparable across runs.
    val_rows = pack(val_r, cfg.max_length, packing=False)
    info = {
        "data_sha256": file_sha256(cfg.data),
        "n_train_examples": len(train_ex),
        "n_val_examples": len(val_ex),
        "n_train_rows": len(train_rows),
        "n_truncated": sum(len(r.input_ids) > cfg.max_length for r in train_r),
        "train_tokens": sum(len(r) for r in train_rows),
    }
    return train_rows, val_rows, info


def adapter_folder(path: str) -> Path:
    """A PEFT adapter folder given as itself or as the run folder that holds it."""
    for folder in (Path(path), Path(path) / ADAPTER):
        if (folder / ADAPTER_CONFIG).is_file():
            return folder
    raise FinetuneError(
        f"init_adapter {path} holds no adapter (adapter_config.json): give an adapter folder, "
        "or the folder of a finished run",
        code="adapter_not_found",
    )


def build_model(cfg: TrainConfig, *, fused_dropout: bool = True) -> torch.nn.Module:
    """The base model (4-bit NF4 for QLoRA) with a fresh LoRA or DoRA adapter, or the
    adapter init_adapter names, trainable; `model.recomputes_activations` says whether it
    checkpoints (memory.py). The adapter's input dropout is fused into
    lora_A (lora_dropout.py) unless `fused_dropout` is off (benchmarks' stock peft)."""
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    model = load_model(cfg.model, quantization=cfg.quantization)
    model.config.use_cache = False
    checkpointing = use_checkpointing(cfg, model)
    if cfg.quantization == "nf4":
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if cfg.init_adapter:
        model = PeftModel.from_pretrained(
            model, adapter_folder(cfg.init_adapter), is_trainable=True
        )
    else:
        model = get_peft_model(model, lora_config(cfg))
    if cfg.neftune_alpha > 0:
        add_neftune(model, cfg.neftune_alpha)
    if fused_dropout:
        fuse_lora_dropout(model)
    model.recomputes_activations = checkpointing
    return model


def lora_config(cfg: TrainConfig) -> Any:
    """The fresh adapter's peft LoraConfig."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=resolve_target_modules(cfg.target_modules),
        use_dora=cfg.method == "dora",
        use_rslora=cfg.lora_scaling == "rslora",
        task_type="CAUSAL_LM",
    )


def add_neftune(model: torch.nn.Module, alpha: float) -> None:
    """NEFTune (Jain et al., 2023): while training, the input embeddings get uniform noise
    in ±alpha/sqrt(tokens × width); evaluation and generation see none. The noise draws
    from torch's RNG, which checkpoints save, so a resumed run stays exact."""

    def noisy(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        scale = alpha / math.sqrt(output.size(-2) * output.size(-1))
        return output + torch.zeros_like(output).uniform_(-scale, scale)

    model.get_input_embeddings().register_forward_hook(noisy)


def build_optimizer(
    cfg: TrainConfig, model: torch.nn.Module, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (paged 8-bit on CUDA by default) and a warm-up + cosine/linear schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    kind = cfg.optimizer
    if kind == "auto":
        kind = "paged_adamw_8bit" if torch.cuda.is_available() else "adamw"
    if kind == "paged_adamw_8bit":
        import bitsandbytes as bnb

        optimizer = bnb.optim.PagedAdamW8bit(
            params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
    else:
        # The fused kernel updates all adapter tensors at once: 5x faster than the loop
        # over SmolLM2's 420 adapter tensors on a CPU (23 ms a step).
        optimizer = torch.optim.AdamW(
            params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True
        )
    warmup = int(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        if cfg.lr_scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if cfg.lr_scheduler == "linear":
            return max(0.0, 1 - progress)
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
