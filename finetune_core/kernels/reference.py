"""Pure-PyTorch references for the csrc/ NF4 kernels (the fallback when nothing compiles).

Same layout and the same fp32 rounding steps as bitsandbytes, so `dequantize_nf4` here is
bitwise equal to `bitsandbytes.functional.dequantize_4bit` and to the compiled kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
import torch.nn.functional as F

# bitsandbytes.functional.get_4bit_type("nf4")
NF4_CODE = torch.tensor(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    dtype=torch.float32,
)

# Batches up to this many rows take the fused (fp32-accumulating) path in the kernel.
MAX_FUSED_ROWS = 8


def block_absmax(
    qabsmax: torch.Tensor,
    code2: torch.Tensor,
    absmax2: torch.Tensor,
    offset: float,
    blocksize2: int,
) -> torch.Tensor:
    """Per-block scales: code2[q] * absmax2[b // blocksize2] + offset, two fp32 roundings."""
    if qabsmax.dtype == torch.float32:  # compress_statistics=False
        return qabsmax.reshape(-1)
    q = qabsmax.reshape(-1).long()
    outer = torch.arange(q.numel(), device=q.device) // blocksize2
    return code2[q] * absmax2.reshape(-1)[outer] + offset


def dequantize_nf4(
    packed: torch.Tensor,
    qabsmax: torch.Tensor,
    code2: torch.Tensor,
    absmax2: torch.Tensor,
    offset: float,
    blocksize: int,
    blocksize2: int,
    shape: Sequence[int],
    dtype: torch.dtype,
) -> torch.Tensor:
    """The weight of `shape` in `dtype`; high nibble first, blocks over the flat weight."""
    numel = prod(shape)
    flat = packed.reshape(-1).view(torch.uint8)[: (numel + 1) // 2]
    idx = torch.stack([flat >> 4, flat & 0x0F], dim=1).reshape(-1)[:numel]
    vals = NF4_CODE.to(packed.device)[idx.long()]
    blocks = -(-numel // blocksize)
    scale = block_absmax(qabsmax, code2, absmax2, offset, blocksize2)[:blocks]
    vals = F.pad(vals, (0, blocks * blocksize - numel)).view(blocks, blocksize) * scale[:, None]
    return vals.reshape(-1)[:numel].to(dtype).reshape(tuple(shape))


def gemv_nf4(
    x: torch.Tensor,
    packed: torch.Tensor,
    qabsmax: torch.Tensor,
    code2: torch.Tensor,
    absmax2: torch.Tensor,
    offset: float,
    blocksize: int,
    blocksize2: int,
    shape: Sequence[int],
) -> torch.Tensor:
    """x @ W.T in x's dtype: fp32 math for small batches, x-dtype matmul for large ones."""
    rows = x.numel() // max(1, x.shape[-1])
    if rows <= MAX_FUSED_ROWS:
        w = dequantize_nf4(
            packed, qabsmax, code2, absmax2, offset, blocksize, blocksize2, shape, torch.float32
        )
        return (x.float() @ w.t()).to(x.dtype)
    w = dequantize_nf4(
        packed, qabsmax, code2, absmax2, offset, blocksize, blocksize2, shape, x.dtype
    )
    return x @ w.t()
