"""Facts about each built-in model for `models` listings, without converting anything."""

from __future__ import annotations

from typing import Any

from finetune_core.contracts.model_facts import gguf_facts
from finetune_core.errors import ModelNotFound
from finetune_core.models.registry import BUILTIN, ModelSpec, gguf_path, is_cached, read_marker


def _gguf_facts(spec: ModelSpec) -> dict[str, Any]:
    """Read architecture, context and parameter count from the GGUF header (memory-mapped)."""
    try:
        path = gguf_path(spec)
    except (ModelNotFound, OSError, ValueError):  # package missing, chunks not assembled
        return {}
    if not path.exists():
        return {}
    facts = gguf_facts(path)
    return {
        "architecture": facts.architecture,
        "context_length": facts.context_length or None,
        "parameters": facts.parameters,
        "vocab_size": facts.vocab_size,
        "layers": facts.layers,
        "hidden_size": facts.hidden_size,
    }


def _tiny_facts(spec: ModelSpec) -> dict[str, Any]:
    """A tiny model's facts without building it: its config, counted on the meta device."""
    import torch
    from transformers import LlamaForCausalLM

    from finetune_core.models.prepare import tiny_config

    config, _ = tiny_config(spec)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return {
        "architecture": "LlamaForCausalLM",
        "model_type": config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "context_length": config.max_position_embeddings,
        "vocab_size": config.vocab_size,
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
    }


def describe(spec: ModelSpec) -> dict[str, Any]:
    cached = is_cached(spec)
    facts = read_marker(spec) if cached else {}
    if spec.kind == "tiny":
        facts |= _tiny_facts(spec)
    if spec.kind == "gguf":
        facts |= _gguf_facts(spec)
        if not facts:
            facts = {"note": f"package {spec.source} not installed"}
    return {
        "name": spec.name,
        "kind": spec.kind,
        "label": spec.label or spec.name,
        "licence": spec.licence,
        "hub_id": spec.hub_id,
        "description": spec.description,
        "cached": cached,
        **facts,
    }


def describe_all() -> list[dict[str, Any]]:
    return [describe(spec) for spec in BUILTIN.values()]
