"""Temperature and top-p (nucleus) sampling without sorting the whole vocabulary.

transformers' TopPLogitsWarper sorts every row of the logits at every step. With
Gemma-3's 262,144-token vocabulary that sort took over a third of the time spent writing
synthetic inputs on a CPU. A nucleus usually lies among the few hundred most likely
tokens, so it is looked for there first; a row whose nucleus is wider takes the full
sort. The kept set is transformers': every token whose more likely tokens hold less than
top_p of the probability (the most likely token always stays).
"""

from __future__ import annotations

from typing import Any

import torch


def _keep_sorted(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Which of these descending probabilities stay: those with less than top_p before them."""
    before = probs.cumsum(-1) - probs
    keep = before < top_p
    keep[..., 0] = True
    return keep


def decoding_kwargs(temperature: float, top_p: float) -> dict[str, Any]:
    """`generate`'s decoding arguments: greedy at temperature 0, else sampling with
    temperature and top-p in one NucleusSampling (transformers' own warpers are off)."""
    if not temperature > 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    from transformers import LogitsProcessorList  # imported when sampling, not at start

    return {
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": None,
        "logits_processor": LogitsProcessorList([NucleusSampling(temperature, top_p)]),
    }


class NucleusSampling:
    """Divides by the temperature, then keeps the top-p nucleus. Pass it to `generate` with
    do_sample=True, temperature=1.0 and top_p=1.0, so transformers adds no warper of its
    own (its warpers would run after this processor, not before)."""

    def __init__(self, temperature: float, top_p: float, k: int = 1024) -> None:
        if not temperature > 0:
            raise ValueError(f"sampling needs a temperature above 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        self.temperature, self.top_p, self.k = temperature, top_p, k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores / self.temperature
        if self.top_p >= 1.0:
            return scores
        probs = scores.float().softmax(-1)
        top, idx = probs.topk(min(self.k, probs.shape[-1]), dim=-1)  # descending
        keep = torch.zeros_like(probs, dtype=torch.bool)
        keep.scatter_(1, idx, _keep_sorted(top, self.top_p))
        wide = top.sum(-1) < self.top_p  # the nucleus reaches past the k most likely
        if wide.any():
            ordered, order = probs[wide].sort(-1, descending=True)
            keep[wide] = torch.zeros_like(ordered, dtype=torch.bool).scatter_(
                1, order, _keep_sorted(ordered, self.top_p)
            )
        return scores.masked_fill(~keep, float("-inf"))
