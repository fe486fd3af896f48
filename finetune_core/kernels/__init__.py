"""Compiled NF4 kernels (csrc/) over bitsandbytes' 4-bit layout, with a PyTorch fallback.

    from finetune_core.kernels import NF4Weight, dequantize, matmul, patch_linear4bit
    w = NF4Weight.from_bnb(linear4bit.weight)     # Params4bit, no conversion
    y = matmul(x, w)                              # x @ W.T
    with patch_linear4bit(): ...                  # Linear4bit forward/backward, CPU and CUDA

TUNEBOOK_NF4_BACKEND=auto|compiled|reference|bitsandbytes forces a path (see ops.py).
"""

from finetune_core.kernels.linear import (
    NF4Linear,
    disable_linear4bit_patch,
    enable_linear4bit_patch,
    nf4_linear,
    patch_linear4bit,
)
from finetune_core.kernels.ops import (
    NF4Weight,
    backend,
    dequantize,
    dequantize_nf4,
    gemv_nf4,
    load_cuda_extension,
    load_extension,
    matmul,
)

__all__ = [
    "NF4Linear",
    "NF4Weight",
    "backend",
    "dequantize",
    "dequantize_nf4",
    "disable_linear4bit_patch",
    "enable_linear4bit_patch",
    "gemv_nf4",
    "load_cuda_extension",
    "load_extension",
    "matmul",
    "nf4_linear",
    "patch_linear4bit",
]
