"""Route bitsandbytes Linear4bit (nf4, CPU) through the tunebook ops, forward and backward.

    from finetune_core.kernels import patch_linear4bit
    with patch_linear4bit():          # or enable_linear4bit_patch() once at start-up
        model(**batch).loss.backward()

Only the input gradient flows through the quantized weight (QLoRA freezes it): grad_x =
grad_out @ dequant(W). CUDA inputs take the tunebook CUDA kernels when they built (else
bitsandbytes' forward); fp4 weights and weights bitsandbytes already repacked for its own
CPU inference format keep bitsandbytes' forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from finetune_core.kernels import ops


class NF4Linear(torch.autograd.Function):
    """y = x @ W.T + bias with W frozen in NF4."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, bias: torch.Tensor | None, w: ops.NF4Weight
    ) -> torch.Tensor:
        ctx.w = w
        ctx.bias_dtype = None if bias is None else bias.dtype
        y = ops.matmul(x, w)
        if bias is not None:
            y = y + bias.to(y.dtype)
        return y

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple:
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ ops.dequantize(ctx.w, grad_out.dtype)
        if ctx.needs_input_grad[1]:
            grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0).to(ctx.bias_dtype)
        return grad_x, grad_bias, None


def _nf4_weight(weight: Any) -> ops.NF4Weight:
    # Cached on the parameter: on CUDA, reading the offset (a 0-dim device tensor) syncs.
    qs = weight.quant_state
    cached = getattr(weight, "_tunebook_nf4", None)
    if cached is not None and cached[0] is qs and cached[1].packed.data_ptr() == weight.data_ptr():
        return cached[1]
    w = ops.NF4Weight.from_bnb(weight)
    try:
        weight._tunebook_nf4 = (qs, w)
    except AttributeError:  # a plain tensor with a quant_state passed in: no cache
        pass
    return w


def nf4_linear(x: torch.Tensor, weight: Any, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear for a bitsandbytes Params4bit (nf4) weight, differentiable in x and bias."""
    w = _nf4_weight(weight)
    if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
        return NF4Linear.apply(x, bias, w)
    # Generation: no autograd node (its set-up costs about as much as a small layer's GEMV).
    y = ops.matmul(x, w)
    return y if bias is None else y + bias.to(y.dtype)


def _ours(module: Any, x: torch.Tensor) -> bool:
    qs = getattr(module.weight, "quant_state", None)
    if qs is None or qs.quant_type != "nf4" or ops.backend() == "bitsandbytes":
        return False
    if x.device.type == "cuda":  # bitsandbytes' own CUDA path unless ours built
        return ops.backend() == "reference" or ops.load_cuda_extension()
    return x.device.type == "cpu" and not getattr(qs, "packing_format_for_cpu", False)


_original_forward: Any = None


def _forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """Linear4bit.forward with bitsandbytes' dtype rules, minus its CPU weight repacking."""
    from bitsandbytes.nn.modules import fix_4bit_weight_quant_state_from_module

    fix_4bit_weight_quant_state_from_module(self)
    if not _ours(self, x):
        return _original_forward(self, x)
    if not self.compute_type_is_set:
        self.set_compute_type(x)
        self.compute_type_is_set = True
    inp_dtype = x.dtype
    if self.compute_dtype is not None:
        x = x.to(self.compute_dtype)
    bias = None if self.bias is None else self.bias.to(x.dtype)
    return nf4_linear(x, self.weight, bias).to(inp_dtype)


def enable_linear4bit_patch() -> None:
    """Send every bitsandbytes Linear4bit forward through `_forward` (idempotent)."""
    global _original_forward
    from bitsandbytes.nn import Linear4bit

    if _original_forward is None:
        _original_forward = Linear4bit.forward
        Linear4bit.forward = _forward


def disable_linear4bit_patch() -> None:
    """Restore bitsandbytes' own Linear4bit forward."""
    global _original_forward
    from bitsandbytes.nn import Linear4bit

    if _original_forward is not None:
        Linear4bit.forward = _original_forward
        _original_forward = None


@contextlib.contextmanager
def patch_linear4bit() -> Iterator[None]:
    """Context manager form; restores the original forward only if it installed the patch."""
    installed = _original_forward is None
    enable_linear4bit_patch()
    try:
        yield
    finally:
        if installed:
            disable_linear4bit_patch()
