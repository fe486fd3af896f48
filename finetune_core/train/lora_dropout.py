"""LoRA's input dropout fused into the adapter's first matrix: cheaper masks, less memory.

peft runs `lora_B(lora_A(dropout(x)))` with an nn.Dropout. On a CPU that dropout costs
more than the adapter itself: it draws a float per element of the layer's input from
torch's Mersenne Twister (`bernoulli_` was 21% of a SmolLM2 QLoRA step, 13x the time of
the lora_A matmul it feeds), and lora_A keeps the dropped copy of its input for the
backward pass, a full-size activation per adapted layer. Here:

- a mask is 16 random bits an element from one seed (on a CPU NumPy's PCG64, 3x faster
  than torch's generator; on CUDA torch's Philox), and the seed is drawn from torch's
  CPU generator, which gradient checkpointing and training checkpoints save and
  restore, so recomputation and exact resume see the same mask;
- the mask is made and applied with float arithmetic (torch's bool kernels on a CPU
  are 5-8x slower than its float ones at these sizes);
- nothing is kept for the backward pass but the seed and the input that the base
  layer shares: the mask is made again there.

The drop probability is p rounded to a multiple of 1/65536, and kept values are scaled
by the inverse of the exact keep probability, so the expectation is unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

LEVELS = 1 << 16  # a lane is 16 random bits


def keep_threshold(p: float) -> int:
    """A lane (as an unsigned number) below this is dropped."""
    return round(p * LEVELS)


def keep_scale(p: float) -> float:
    return LEVELS / (LEVELS - keep_threshold(p))


def mask_seed() -> int:
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def random_lanes(seed: int, shape: torch.Size, device: torch.device) -> torch.Tensor:
    """int16 lanes of `shape`, uniform over all 65536 values, a pure function of `seed`."""
    if device.type == "cpu":
        raw = np.random.PCG64(seed).random_raw((shape.numel() + 3) // 4)
        return torch.from_numpy(raw.view(np.int16)[: shape.numel()]).view(shape)
    generator = torch.Generator(device).manual_seed(seed)
    return torch.randint(
        -(1 << 15), 1 << 15, shape, dtype=torch.int16, device=device, generator=generator
    )


def keep_mask(lanes: torch.Tensor, p: float) -> torch.Tensor:
    """fp32 1.0 where kept, 0.0 where dropped: lane + 32768 is uniform in [0, 65536) and
    kept from keep_threshold(p) on (fp32 holds every lane exactly; bf16 would not)."""
    return lanes.float().add_((1 << 15) + 1 - keep_threshold(p)).clamp_(0, 1)


def _mask(seed: int, x: torch.Tensor, p: float) -> torch.Tensor:
    return keep_mask(random_lanes(seed, x.shape, x.device), p).to(x.dtype)


class _DroppedLinear(torch.autograd.Function):
    """F.linear(dropout(x), weight), keeping x (shared with the base layer) and a seed.

    The keep scale is applied on the narrow side, the adapter's r outputs and their
    gradient, rather than on the layer's input: (x * m * s) @ W.T = s * ((x * m) @ W.T).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        ctx.seed, ctx.p = mask_seed(), p
        ctx.save_for_backward(x, weight)
        return F.linear(x * _mask(ctx.seed, x, p), weight).mul_(keep_scale(p))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        mask = _mask(ctx.seed, x, ctx.p)
        grad_out = grad_out * keep_scale(ctx.p)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_out @ weight.to(grad_out.dtype)).mul_(mask)
        if ctx.needs_input_grad[1]:
            dropped = (x * mask).reshape(-1, x.shape[-1]).to(grad_out.dtype)
            grad_w = (grad_out.reshape(-1, grad_out.shape[-1]).t() @ dropped).to(weight.dtype)
        return grad_x, grad_w, None


class DropoutLinear(torch.nn.Linear):
    """An adapter's lora_A (peft's have no bias) with its input dropout inside; the same
    parameter names, so state dicts, saved adapters and merging are unchanged."""

    p: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return F.linear(x, self.weight)
        return _DroppedLinear.apply(x, self.weight, self.p)


def fuse_lora_dropout(model: torch.nn.Module) -> int:
    """Move every LoRA layer's input dropout into its lora_A (DoRA layers keep peft's path,
    which reads the dropped input itself). Returns how many adapters were fused."""
    fused = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        adapters = getattr(module, "lora_A", {})  # embeddings keep lora_embedding_A
        for name, dropout in list(dropouts.items()):
            lora_a = adapters[name] if name in adapters else None
            if not _fusable(module, name, dropout, lora_a):
                continue
            lora_a.__class__ = DropoutLinear  # the same parameters, hooks and device
            lora_a.p = float(dropout.p)
            dropouts[name] = torch.nn.Identity()
            fused += 1
    return fused


def _fusable(module: Any, name: str, dropout: Any, lora_a: Any) -> bool:
    return (
        isinstance(dropout, torch.nn.Dropout)
        and dropout.p > 0
        and type(lora_a) is torch.nn.Linear
        and lora_a.bias is None
        # DoRA and peft's other variants run their own forward, which reads the dropout
        and name not in getattr(module, "lora_variant", {})
        and not getattr(module, "use_dora", {}).get(name, False)
    )
