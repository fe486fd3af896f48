"""A portable adapter: the run's PEFT folder, naming its base by public hub id rather than
a cache folder, with the exact weights it trained against recorded in the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from finetune_core.contracts.layout import ADAPTER_CONFIG
from finetune_core.export.common import ExportRecord, FinishedRun, Reporter
from finetune_core.models.prepare import prepare
from finetune_core.models.registry import gguf_path, resolve
from finetune_core.train.outputs import file_sha256


def trained_against(run: FinishedRun) -> dict[str, Any]:
    """The weights the adapter learned on: a GGUF file (dequantized, then quantized again
    to the run's 4-bit) or the prepared safetensors, each with its sha256."""
    spec = resolve(run.base_model)
    facts: dict[str, Any] = {"model": spec.name, "hub_id": spec.hub_id or None}
    if spec.kind == "gguf":
        path = gguf_path(spec)
        facts["source"] = "gguf, dequantized"
    else:
        path = prepare(run.base_model) / "model.safetensors"
        facts["source"] = "safetensors"
    facts.update(file=path.name, sha256=file_sha256(path) if path.is_file() else None)
    facts["quantization"] = run.quantization
    return facts


def server_warnings(config: dict[str, Any]) -> list[str]:
    """What the adapter servers do with this adapter's options, as checked against their code
    (tests/core/test_export_servers.py): a plain LoRA loads as-is in vLLM and LoRAX."""
    warnings = []
    if config.get("use_dora"):
        warnings.append(
            "DoRA adapter: vLLM (0.34) refuses DoRA, and LoRAX and TGI load only lora_A and "
            "lora_B, dropping the magnitude vectors without a word (llama.cpp's "
            "convert_lora_to_gguf.py stops at them): serve the merged export instead"
        )
    if config.get("use_rslora"):
        warnings.append(
            "rsLoRA adapter: vLLM scales it by alpha/sqrt(r) as trained, but LoRAX reads the "
            "config with peft 0.4.0, which has no use_rslora, and scales by alpha/r"
        )
    return warnings


def write_adapter(run: FinishedRun, out: Path, *, record: ExportRecord, hooks: Reporter) -> None:
    hooks.report("copying the adapter", 0.3)
    for item in run.adapter.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)
    facts = trained_against(run)
    config_path = out / ADAPTER_CONFIG
    config = json.loads(config_path.read_text())
    record.facts["trained_against"] = facts
    if facts["hub_id"]:
        config["base_model_name_or_path"] = facts["hub_id"]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    else:
        record.warnings.append(
            f"{facts['model']} has no public hub id: adapter_config.json keeps the local "
            f"base {config.get('base_model_name_or_path')!r}"
        )
    record.warnings.extend(server_warnings(config))
    record.facts["peft_type"] = config.get("peft_type")
    record.facts["use_dora"] = bool(config.get("use_dora"))
    record.facts["base_model_name_or_path"] = config["base_model_name_or_path"]
