"""Merge a run's adapter (LoRA or DoRA) into its base loaded in 16-bit, never into the
4-bit weights it trained against, and write a standard Hugging Face folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from finetune_core.export.common import ExportError, ExportRecord, FinishedRun, Reporter
from finetune_core.models.loading import end_of_turn_ids
from finetune_core.models.prepare import prepare

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


def run_tokenizer(run: FinishedRun) -> PreTrainedTokenizerBase:
    """The tokenizer the run trained with (saved beside its adapter, chat template included)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(run.adapter)


def merged_model(run: FinishedRun, hooks: Reporter) -> torch.nn.Module:
    """The base in fp32 with the adapter merged in: the merge itself loses nothing, the
    caller rounds once to the type it writes."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    hooks.report("loading the base in 16-bit", 0.05)
    base = AutoModelForCausalLM.from_pretrained(prepare(run.base_model), dtype=torch.float32)
    hooks.report("merging the adapter", 0.2)
    model = PeftModel.from_pretrained(base, run.adapter).merge_and_unload()
    model.eval()
    return model


def write_merged(
    run: FinishedRun,
    out: Path,
    *,
    dtype: str,
    record: ExportRecord,
    hooks: Reporter,
    max_shard_size: str = "2GB",
) -> torch.nn.Module:
    """config.json, safetensors shards, tokenizer and chat template, generation_config."""
    if dtype not in DTYPES:
        raise ExportError(f"a merged export is bf16 or f16, not {dtype!r}", code="export_bad_type")
    model = merged_model(run, hooks).to(DTYPES[dtype])
    tokenizer = run_tokenizer(run)
    # Chat generation stops at the end of a turn, as in Tunebook's own playground.
    model.generation_config.eos_token_id = end_of_turn_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    hooks.report("writing safetensors", 0.4)
    model.save_pretrained(out, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out)
    record.facts["dtype"] = dtype
    return model


def merged_facts(model: torch.nn.Module) -> dict[str, Any]:
    config = model.config
    return {
        "architecture": config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
