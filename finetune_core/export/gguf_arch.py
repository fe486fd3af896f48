"""What the GGUF writer knows per architecture: how Hugging Face tensor names map to
llama.cpp's, which tensors it reorders, and the hyperparameters it writes as metadata.
Adding an architecture is one `Architecture(...)` entry in ARCHITECTURES."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from finetune_core.export.common import ExportError

Metadata = dict[str, Any]  # key without the "<arch>." prefix -> value


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta") or getattr(config, "rope_theta", 10000.0))


def _head_dim(config: Any) -> int:
    return int(
        getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    )


def llama_metadata(config: Any) -> Metadata:
    return {
        "context_length": config.max_position_embeddings,
        "embedding_length": config.hidden_size,
        "block_count": config.num_hidden_layers,
        "feed_forward_length": config.intermediate_size,
        "attention.head_count": config.num_attention_heads,
        "attention.head_count_kv": config.num_key_value_heads,
        "attention.layer_norm_rms_epsilon": float(config.rms_norm_eps),
        "rope.freq_base": _rope_theta(config),
        "rope.dimension_count": _head_dim(config),
        "vocab_size": config.vocab_size,
    }


def _llama_checks(config: Any) -> None:
    params = getattr(config, "rope_parameters", None) or {}
    if params.get("rope_type", "default") != "default":
        raise ExportError(
            f"the GGUF writer handles llama with plain RoPE, not {params['rope_type']!r} scaling",
            code="export_unsupported_architecture",
        )


def permute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face stores q/k rows with each head's rotary halves split apart; llama.cpp
    wants them interleaved (the inverse of what HF's conversion scripts do)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


@dataclass(frozen=True)
class Architecture:
    gguf_name: str
    # HF name (with {i} for the block) -> GGUF name
    tensors: dict[str, str]
    metadata: Callable[[Any], Metadata]
    # GGUF name suffix -> transform(weight, config)
    transforms: dict[str, Callable[[np.ndarray, Any], np.ndarray]]
    check: Callable[[Any], None] = lambda config: None

    def gguf_tensor_name(self, hf_name: str) -> str:
        block = re.match(r"model\.layers\.(\d+)\.", hf_name)
        key = hf_name.replace(block.group(0), "model.layers.{i}.") if block else hf_name
        if key not in self.tensors:
            raise ExportError(
                f"the {self.gguf_name} GGUF writer has no name for tensor {hf_name!r}",
                code="export_unsupported_architecture",
            )
        return self.tensors[key].format(i=block.group(1) if block else "")

    def transform(self, gguf_name: str, weight: np.ndarray, config: Any) -> np.ndarray:
        suffix = gguf_name.split(".", 2)[-1] if gguf_name.startswith("blk.") else gguf_name
        fn = self.transforms.get(suffix)
        return fn(weight, config) if fn else weight


LLAMA = Architecture(
    gguf_name="llama",
    tensors={
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
        "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
        "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
        "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
        "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
        "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
        "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
        "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
        "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
        "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
    },
    metadata=llama_metadata,
    transforms={
        "attn_q.weight": lambda w, c: permute_rotary(w, c.num_attention_heads),
        "attn_k.weight": lambda w, c: permute_rotary(w, c.num_key_value_heads),
    },
    check=_llama_checks,
)

# Keyed by the Hugging Face config's model_type.
ARCHITECTURES: dict[str, Architecture] = {"llama": LLAMA}


def architecture_for(config: Any) -> Architecture:
    arch = ARCHITECTURES.get(config.model_type)
    if arch is None:
        raise ExportError(
            f"the GGUF writer does not know the architecture {config.model_type!r}; it "
            f"supports {', '.join(sorted(ARCHITECTURES))} (merged and adapter exports work "
            "for any architecture)",
            code="export_unsupported_architecture",
        )
    arch.check(config)
    return arch
