"""LoRA's input dropout fused into the adapter's first matrix: cheaper masks, less memory.

peft runs `lora_B(lora_A(dropout(x)))` with an nn.Dropout. On a CPU that dropout costs
more than the adapter itself: it draws a float per element of the layer's input
(`bernoulli_` was 21% of a SmolLM2 QLoRA step, 13x the time of the lora_A matmul it
feeds), and lora_A keeps the dropped copy of its input for the backward pass, a
full-size activation per adapted layer. Here the mask takes 15 random bits an element
(four per 64-bit draw, 6x faster to draw), is kept as one byte an element, and the
dropped input is recomputed in the backward pass from the input the base layer shares.

The drop probability is p rounded to a multiple of 1/32768, and kept values are scaled
by the inverse of the exact keep probability, so the expectation is unchanged. The mask
comes from the device's default generator, which gradient checkpointing and training
checkpoints save and restore, so recomputation and exact resume see the same mask.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

LANE_LEVELS = 1 << 15  # an int64 draw is in [0, 2**63): each 16-bit lane has 15 random bits


def keep_threshold(p: float) -> int:
    """Lanes below this (of LANE_LEVELS) are dropped."""
    return round(p * LANE_LEVELS)


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """A bool mask of `shape`, True with probability 1 - keep_threshold(p) / LANE_LEVELS."""
    n = shape.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()
    lanes = draws.view(torch.int16)[:n].bitwise_and_(LANE_LEVELS - 1)
    return (lanes >= keep_threshold(p)).view(shape)


def keep_scale(p: float) -> float:
    return LANE_LEVELS / (LANE_LEVELS - keep_threshold(p))


class _DroppedLinear(torch.autograd.Function):
    """F.linear(dropout(x), weight) that keeps x (shared) and a byte mask, not dropout(x).

    The keep scale is applied on the narrow side, the adapter's r outputs and their
    gradient, rather than on the layer's input: (x * m * s) @ W.T = s * ((x * m) @ W.T);
    the mask selects (torch.where) rather than multiplies, which would first cast it to
    the input's dtype (4x slower at 2048 x 576).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        mask = keep_mask(x.shape, p, x.device)
        ctx.scale = keep_scale(p)
        ctx.save_for_backward(x, weight, mask)
        return F.linear(torch.where(mask, x, 0.0), weight).mul_(ctx.scale)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        x, weight, mask = ctx.saved_tensors
        grad_out = grad_out * ctx.scale
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.where(mask, grad_out @ weight.to(grad_out.dtype), 0.0)
        if ctx.needs_input_grad[1]:
            dropped = torch.where(mask, x, 0.0).reshape(-1, x.shape[-1]).to(grad_out.dtype)
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
        for name, dropout in list(dropouts.items()):
            lora_a = module.lora_A[name]
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
        and not getattr(module, "use_dora", {}).get(name, False)
    )
