"""Turn a registry entry into a Hugging Face folder in the cache, once.

Every write goes to a temporary sibling folder that is renamed into place at
the end, so an interrupted conversion never leaves a half-written model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

from finetune_core.errors import ModelNotFound
from finetune_core.models.registry import (
    ModelSpec,
    chat_template_for,
    gguf_path,
    prepared_dir,
    resolve,
)


def prepare(name_or_path: str) -> Path:
    """Return a folder that `from_pretrained` loads in seconds, converting if needed."""
    spec = resolve(name_or_path)
    target = prepared_dir(spec)
    if spec.kind == "local" or (target / "tunebook.json").exists():
        return target
    if spec.kind == "hub":
        return _download(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; every worker process reads the cache
    try:
        model = _convert_gguf(spec, staging) if spec.kind == "gguf" else _build_tiny(spec, staging)
        _write_marker(spec, model, staging)
        if target.exists():  # a concurrent prepare won the race; keep its folder
            shutil.rmtree(staging)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _convert_gguf(spec: ModelSpec, out: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = gguf_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.chat_template = chat_template_for(spec, tokenizer.chat_template)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.bfloat16,
    )
    # The loaded model still carries the GGUF quantizer, which refuses to
    # serialise; after dequantizing, the weights are plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model


def _byte_tokenizer(chat_template: str) -> PreTrainedTokenizerFast:
    """A 259-token byte-level tokenizer built locally: no download, exact round trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_config(spec: ModelSpec) -> tuple[Any, PreTrainedTokenizerFast]:
    """A tiny model's Llama config and its byte-level tokenizer."""
    from transformers import LlamaConfig

    tokenizer = _byte_tokenizer(spec.default_chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **dict(spec.tiny_config),
    )
    return config, tokenizer


def _build_tiny(spec: ModelSpec, out: Path) -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    config, tokenizer = tiny_config(spec)
    torch.manual_seed(0)  # the same weights on every machine
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model


def _download(spec: ModelSpec) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec.source))
    except Exception as exc:  # offline, unknown id, gated repo: all end here
        raise ModelNotFound(f"could not fetch {spec.source!r} from the hub: {exc}") from exc


def _write_marker(spec: ModelSpec, model: torch.nn.Module, out: Path) -> None:
    config = model.config
    facts = {
        "name": spec.name,
        "architecture": config.architectures[0] if config.architectures else config.model_type,
        "model_type": config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "context_length": int(getattr(config, "max_position_embeddings", 0) or 0),
    }
    (out / "tunebook.json").write_text(json.dumps(facts, indent=2))
