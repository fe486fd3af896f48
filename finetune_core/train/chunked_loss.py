"""Cross-entropy of the output layer, chunk by chunk: the full logits never exist.

Gemma's 262k vocabulary x 2048 trained tokens is 2 GB of fp32 logits, and as much
again for their gradient. Here the forward pass walks the trained positions in chunks
of rows: each chunk's logits give its loss and, at once, its gradient with respect to
the hidden states (and to the output weight and bias, where those train); then they are
dropped. Backward only scales the stored gradients, so peak memory is one chunk's logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# fp32 elements of one chunk's logits (128 MiB): a chunk of rows fills it.
LOGITS_BUDGET = 1 << 25
MIN_CHUNK_ROWS = 16  # fewer rows make the output matmul too thin to run fast


def default_chunk_rows(vocab: int) -> int:
    return max(MIN_CHUNK_ROWS, LOGITS_BUDGET // vocab)


def trained_loss(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    labels: torch.Tensor,
    *,
    softcap: float | None = None,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` (soft-capped as Gemma does) against labels.

    `hidden` (n, hidden) holds only trained positions. A plain `nn.Linear` head runs
    chunked; any other (a quantised or adapted output layer) runs its own forward."""
    if type(head) is torch.nn.Linear:
        return linear_cross_entropy(
            hidden, head.weight, head.bias, labels, softcap=softcap, chunk_rows=chunk_rows
        )
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, labels, reduction="sum")


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    softcap: float | None = None,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """sum_i CE(softcap(hidden_i @ weight.T + bias), labels_i), in fp32, chunk_rows rows at a time."""
    rows = chunk_rows or default_chunk_rows(weight.shape[0])
    if rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {rows}")
    return _LinearCrossEntropy.apply(
        hidden.to(weight.dtype), weight, bias, labels, softcap or None, rows
    )


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        labels: torch.Tensor,
        softcap: float | None,
        rows: int,
    ) -> torch.Tensor:
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if want_h else None
        # The loss, and the weight and bias gradients summed over chunks, are at least
        # fp32 (cast once at the end), as the logits are.
        acc = _accumulate_dtype(weight)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if want_b else None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h = hidden[start : start + rows]
            y = labels[start : start + rows]
            loss, dlogits = _chunk(h, weight, bias, y, softcap, want_h or want_w or want_b)
            total += loss
            if dlogits is None:
                continue
            g = dlogits.to(weight.dtype)
            if grad_h is not None:
                grad_h[start : start + rows] = g @ weight
            if grad_w is not None:
                grad_w += (g.T @ h).to(acc)
            if grad_b is not None:
                grad_b += dlogits.sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        return (
            None if grad_h is None else grad_h * grad_out.to(grad_h.dtype),
            None if grad_w is None else (grad_w * grad_out).to(w_dtype),
            None if grad_b is None else (grad_b * grad_out).to(b_dtype),
            None,
            None,
            None,
        )


def _chunk(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    softcap: float | None,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk's summed loss and d loss / d logits (None when nothing needs a gradient).

    Works in place on the chunk's one fp32 logits buffer (two with soft-capping)."""
    z = F.linear(h, weight, bias).to(_accumulate_dtype(weight))
    if softcap:
        t = z.div_(softcap).tanh_()  # z's buffer now holds tanh(z / cap)
        s = t * softcap
    else:
        t, s = None, z
    lse = torch.logsumexp(s, dim=-1)
    loss = (lse - s.gather(1, labels[:, None]).squeeze(1)).sum()
    if not need_grad:
        return loss, None
    g = s.sub_(lse[:, None]).exp_()  # softmax
    g[torch.arange(labels.shape[0], device=g.device), labels] -= 1
    if t is not None:  # d(cap * tanh(z / cap)) / dz = 1 - tanh^2
        g.mul_(t.square_().neg_().add_(1))
    return loss, g


def _accumulate_dtype(weight: torch.Tensor) -> torch.dtype:
    return torch.promote_types(weight.dtype, torch.float32)
