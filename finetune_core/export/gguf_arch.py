"""What the GGUF writer knows per architecture: how Hugging Face tensor names map to
llama.cpp's, which tensors it reorders or rescales, the hyperparameters it writes as
metadata, and the settings llama.cpp cannot be told (refused by each entry's check).
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


def _fail(reason: str) -> None:
    raise ExportError(reason, code="export_unsupported_architecture")


def _head_dim(config: Any) -> int:
    return int(
        getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    )


def shared_metadata(config: Any) -> Metadata:
    """The hyperparameters every decoder family here writes under the same keys."""
    return {
        "context_length": config.max_position_embeddings,
        "embedding_length": config.hidden_size,
        "block_count": config.num_hidden_layers,
        "feed_forward_length": config.intermediate_size,
        "attention.head_count": config.num_attention_heads,
        "attention.head_count_kv": config.num_key_value_heads,
        "attention.layer_norm_rms_epsilon": float(config.rms_norm_eps),
    }


def llama_metadata(config: Any) -> Metadata:
    return {
        **shared_metadata(config),
        "rope.freq_base": _rope_theta(config),
        "rope.dimension_count": _head_dim(config),
        "vocab_size": config.vocab_size,
    }


def _llama_checks(config: Any) -> None:
    params = getattr(config, "rope_parameters", None) or {}
    if params.get("rope_type", "default") != "default":
        _fail(f"the GGUF writer handles llama with plain RoPE, not {params['rope_type']!r} scaling")


def permute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face stores q/k rows with each head's rotary halves split apart; llama.cpp
    wants them interleaved (the inverse of what HF's conversion scripts do)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def gemma3_metadata(config: Any) -> Metadata:
    # The sliding layers' RoPE base (10000) and pattern (every 6th layer global) are fixed
    # in llama.cpp's gemma3 loader, as is the sqrt(hidden) embedding scale: _gemma3_checks.
    return {
        **shared_metadata(config),
        "attention.key_length": _head_dim(config),
        "attention.value_length": _head_dim(config),
        "attention.sliding_window": config.sliding_window,
        "rope.freq_base": float(config.rope_parameters["full_attention"]["rope_theta"]),
    }


def _gemma3_checks(config: Any) -> None:
    """Refuse what llama.cpp's gemma3 graph would silently compute differently."""
    pattern = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
               for i in range(config.num_hidden_layers)]  # fmt: skip
    if list(config.layer_types) != pattern:
        _fail("the GGUF writer handles gemma3 with every 6th layer global, as llama.cpp does")
    rope = config.rope_parameters
    if any(r.get("rope_type", "default") != "default" for r in rope.values()):
        _fail("the GGUF writer handles gemma3 with plain RoPE, not scaled RoPE")
    if float(rope["sliding_attention"]["rope_theta"]) != 10000.0:
        _fail("llama.cpp fixes gemma3's sliding-window RoPE base at 10000")
    if config.query_pre_attn_scalar != _head_dim(config):
        _fail("llama.cpp scales gemma3's attention by 1/sqrt(head_dim) only")
    if config.final_logit_softcapping or config.attn_logit_softcapping:
        _fail("llama.cpp's gemma3 graph applies no logit soft-capping")


def plus_one(weight: np.ndarray, config: Any) -> np.ndarray:
    """Gemma's RMSNorm multiplies by (1 + w) in transformers; llama.cpp stores the factor."""
    return weight + 1


def suffix(gguf_name: str) -> str:
    """A tensor's name without its block ("blk.3.attn_q.weight" -> "attn_q.weight")."""
    return gguf_name.split(".", 2)[-1] if gguf_name.startswith("blk.") else gguf_name


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
        fn = self.transforms.get(suffix(gguf_name))
        return fn(weight, config) if fn else weight


# Hugging Face's names of the tensors both families share, and llama.cpp's for them.
_BLOCK = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
}
_GEMMA3_NORMS = {
    "model.layers.{i}.self_attn.q_norm.weight": "blk.{i}.attn_q_norm.weight",
    "model.layers.{i}.self_attn.k_norm.weight": "blk.{i}.attn_k_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.post_attention_norm.weight",
    "model.layers.{i}.pre_feedforward_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.post_feedforward_layernorm.weight": "blk.{i}.post_ffw_norm.weight",
}

LLAMA = Architecture(
    gguf_name="llama",
    tensors={
        **_BLOCK,
        "lm_head.weight": "output.weight",
        "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    },
    metadata=llama_metadata,
    transforms={
        "attn_q.weight": lambda w, c: permute_rotary(w, c.num_attention_heads),
        "attn_k.weight": lambda w, c: permute_rotary(w, c.num_key_value_heads),
    },
    check=_llama_checks,
)

GEMMA3 = Architecture(
    gguf_name="gemma3",
    tensors={**_BLOCK, **_GEMMA3_NORMS},  # embeddings always tied: no lm_head
    metadata=gemma3_metadata,
    # No rotary permute: llama.cpp's gemma3 uses the NeoX layout Hugging Face stores.
    transforms={
        suffix(name): plus_one
        for hf, name in {**_BLOCK, **_GEMMA3_NORMS}.items()
        if hf.endswith("norm.weight")
    },
    check=_gemma3_checks,
)

# Keyed by the Hugging Face config's model_type.
ARCHITECTURES: dict[str, Architecture] = {"llama": LLAMA, "gemma3_text": GEMMA3}


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
