"""Load a prepared model: in 4-bit NF4 for QLoRA, or in full precision."""

from __future__ import annotations

import functools
import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

from finetune_core.models.prepare import prepare
from finetune_core.models.registry import chat_template_for, resolve

Quantization = Literal["nf4", "none"]

# Tokens that end an assistant turn, in the families we ship.
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# bf16 must multiply this many times faster than fp32 for a CPU to compute in it.
BF16_MIN_SPEEDUP = 1.15
# An operator's pin of the CPU's compute dtype (every process of a host the same, untimed).
CPU_DTYPE_ENV = "TUNEBOOK_CPU_DTYPE"
CPU_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def default_compute_dtype(device: torch.device | None = None) -> torch.dtype:
    """bf16 where the hardware multiplies it faster than fp32, else fp32.

    A CPU's flags do not say: with plain AVX-512 (an Intel Xeon without AVX512-BF16)
    oneDNN emulates bf16, 3x slower than fp32; with AVX2 only (an EPYC) PyTorch falls back
    to a scalar GEMM, 60x slower; and an Intel Xeon with AVX512-BF16 but no AMX multiplied
    bf16 1.7x slower than fp32 (a QLoRA step of SmolLM2 took 1.4x as long). So a CPU with
    bf16 instructions is timed once (cpu_bf16_speedup), unless TUNEBOOK_CPU_DTYPE pins it."""
    device = device or default_device()
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    forced = os.environ.get(CPU_DTYPE_ENV, "")
    if forced:
        if forced not in CPU_DTYPES:
            raise ValueError(f"{CPU_DTYPE_ENV} must be bf16 or fp32, not {forced!r}")
        return CPU_DTYPES[forced]
    return torch.bfloat16 if cpu_bf16_speedup() >= BF16_MIN_SPEEDUP else torch.float32


@functools.cache
def cpu_bf16_speedup() -> float:
    """fp32 GEMM time / bf16 GEMM time on this CPU, at a QLoRA layer's shape (0.0 where
    the CPU lacks bf16 instructions: an emulation need not be timed). Under 0.2 s, once."""
    if not cpu_has_native_bf16():
        return 0.0
    a, b = torch.randn(1024, 576), torch.randn(576, 1536)
    return _gemm_seconds(a, b) / _gemm_seconds(a.bfloat16(), b.bfloat16())


def _gemm_seconds(a: torch.Tensor, b: torch.Tensor, repeats: int = 5) -> float:
    torch.mm(a, b)  # the first call builds the kernel
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return best


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16, AMX or Arm's BF16 in the CPU flags. oneDNN's own check
    (`_is_mkldnn_bf16_supported`) says yes to any AVX-512, where bf16 is only emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: trust oneDNN
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool(re.search(r"\b(avx512_bf16|amx_bf16|bf16)\b", flags))


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    spec = resolve(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(prepare(name_or_path))
    tokenizer.chat_template = chat_template_for(spec, tokenizer.chat_template)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids that stop generation: the end-of-turn marker(s) and EOS."""
    vocab = tokenizer.get_vocab()
    ids = [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


def load_model(
    name_or_path: str,
    *,
    quantization: Quantization = "nf4",
    compute_dtype: torch.dtype | None = None,
    device: torch.device | None = None,
) -> torch.nn.Module:
    """Load a base model; `nf4` is QLoRA's 4-bit NormalFloat with double quantization.
    `compute_dtype` defaults to what the device multiplies fastest (default_compute_dtype)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    folder = prepare(name_or_path)
    device = device or default_device()
    compute_dtype = compute_dtype or default_compute_dtype(device)
    kwargs: dict = {"dtype": compute_dtype, "device_map": {"": str(device)}}
    if quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_quant_storage=torch.uint8,
        )
        # Our compiled NF4 ops serve Linear4bit on the CPU (TUNEBOOK_NF4_BACKEND=bitsandbytes
        # or reference forces the stock or the pure-PyTorch path, for comparison).
        from finetune_core.kernels import enable_linear4bit_patch

        enable_linear4bit_patch()
    elif quantization != "none":
        raise ValueError(f"quantization must be 'nf4' or 'none', not {quantization!r}")
    return AutoModelForCausalLM.from_pretrained(folder, **kwargs)
