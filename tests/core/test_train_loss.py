"""The training loss: token-weighted gradient accumulation and the chunked output layer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from finetune_core.data.pack import collate
from finetune_core.models import load_tokenizer
from finetune_core.train.chunked_loss import linear_cross_entropy
from finetune_core.train.recipe import (
    accumulate_gradients,
    step_micro_batches,
    token_loss,
    trained_tokens,
)
from finetune_core.train.setup import build_model, prepare_rows
from tests.core.test_train import config, write_chat

# Answers of very different lengths, so the rows hold very different trained tokens.
MIXED = [
    ("Say yes.", "y"),
    ("Spell ab.", "ab"),
    ("Name two colours.", "blue and green"),
    ("Count to ten.", "one two three four five six seven eight nine ten, and then eleven"),
]


def fp32_model_and_rows(tmp_path: Path) -> tuple[torch.nn.Module, list, int]:
    """The tiny model in fp32 with a LoRA whose B is random too (at init B = 0, so A
    would get no gradient), and the MIXED rows, unpacked."""
    data = write_chat(tmp_path / "mixed.jsonl", MIXED)
    cfg = config(
        tmp_path,
        "loss",
        data=str(data),
        lora_dropout=0.0,
        quantization="none",
        packing=False,
        val_fraction=0.0,
    )
    tokenizer = load_tokenizer(cfg.model)
    rows, _, _ = prepare_rows(cfg, tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg).float()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    return model, rows, tokenizer.pad_token_id


def lora_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


def test_grad_accum_weighs_every_trained_token_like_one_big_batch(tmp_path) -> None:
    model, rows, pad = fp32_model_and_rows(tmp_path)
    counts = sorted(trained_tokens([row]) for row in rows)
    assert len(rows) == 4 and counts[-1] > 4 * counts[0]  # very unequal micro-batches

    accumulated = config(tmp_path, "a", grad_accum=4, batch_size=1)
    whole = config(tmp_path, "w", grad_accum=1, batch_size=4)
    split = step_micro_batches(accumulated, rows, step=0)
    batch = step_micro_batches(whole, rows, step=0)
    assert [len(m) for m in split] == [1, 1, 1, 1] and [len(m) for m in batch] == [4]

    loss_split, tokens = accumulate_gradients(model, split, pad)
    grads_split = lora_grads(model)
    loss_whole, _ = accumulate_gradients(model, batch, pad)
    grads_whole = lora_grads(model)

    assert tokens == sum(len(row) for row in rows)
    # The logged loss is the token-weighted mean over the step, as one batch's mean is.
    assert loss_split == pytest.approx(loss_whole, rel=1e-5)
    with torch.no_grad():
        mean, _ = token_loss(model, collate(rows, pad))
    assert loss_whole == pytest.approx(float(mean), rel=1e-5)
    assert all(g.abs().sum() > 0 for g in grads_whole.values())
    for name, grad in grads_whole.items():
        torch.testing.assert_close(grads_split[name], grad, rtol=1e-4, atol=1e-7)


def test_chunked_token_loss_has_the_models_own_loss_and_gradients(tmp_path) -> None:
    # transformers' loss builds the full logits; ours walks 3 trained positions at a time.
    model, rows, pad = fp32_model_and_rows(tmp_path)
    batch = collate(rows, pad)
    ours, n = token_loss(model, batch, chunk_rows=3)
    ours.backward()
    grads_ours = lora_grads(model)
    theirs = model(**batch, use_cache=False).loss
    theirs.backward()
    grads_theirs = lora_grads(model)

    assert n == int((batch["labels"] != -100).sum()) > 3 * 3
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    for name, grad in grads_theirs.items():
        torch.testing.assert_close(grads_ours[name], grad, rtol=1e-4, atol=1e-7)


def plain_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    labels: torch.Tensor,
    cap: float,
) -> torch.Tensor:
    """The full-logits reference: soft-capped as Gemma's forward does."""
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(torch.tanh(logits / cap) * cap, labels, reduction="sum")


def synthetic(dtype: torch.dtype, n: int = 37, dim: int = 16, vocab: int = 50) -> tuple:
    torch.manual_seed(1)
    leaves = (
        torch.randn(n, dim, dtype=dtype),
        torch.randn(vocab, dim, dtype=dtype),
        torch.randn(vocab, dtype=dtype),
    )
    return (*(t.requires_grad_() for t in leaves), torch.randint(0, vocab, (n,)))


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_chunked_loss_with_softcapping_matches_the_full_logits(
    dtype: torch.dtype, tol: float
) -> None:
    hidden, weight, bias, labels = synthetic(dtype)
    cap = 2.0  # small, so tanh bends most logits: a wrong derivative could not pass
    results = []
    for loss_fn in (
        lambda: linear_cross_entropy(hidden, weight, bias, labels, softcap=cap, chunk_rows=8),
        lambda: plain_loss(hidden, weight, bias, labels, cap),
    ):
        loss = loss_fn()
        (0.5 * loss).backward()  # backward must scale by the incoming gradient
        results.append((loss, *(t.grad.clone() for t in (hidden, weight, bias))))
        for t in (hidden, weight, bias):
            t.grad = None
    for ours, theirs in zip(*results, strict=True):
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)


def test_chunked_loss_gradients_are_exact_in_float64() -> None:
    hidden, weight, bias, labels = synthetic(torch.float64)
    for cap in (None, 2.0):
        assert torch.autograd.gradcheck(
            lambda h, w, b, cap=cap: linear_cross_entropy(
                h, w, b, labels, softcap=cap, chunk_rows=8
            ),
            (hidden, weight, bias),
        )


class TensorShapes(TorchDispatchMode):
    """Records the shape of every tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


def logits_rows(chunk_rows: int | None) -> set[int]:
    """The row counts of every (rows, vocab) tensor built in a forward and backward pass."""
    hidden, weight, bias, labels = synthetic(torch.float32)
    with TensorShapes() as seen:
        linear_cross_entropy(hidden, weight, bias, labels, chunk_rows=chunk_rows).backward()
    vocab, dim = weight.shape
    # (dim, vocab) is the weight's transpose (a view), not logits.
    return {s[0] for s in seen.shapes if len(s) == 2 and s[1] == vocab and s != (dim, vocab)}


def test_chunks_never_build_the_full_logits() -> None:
    # 37 trained positions in chunks of 8: four chunks of 8 and one of 5, never 37.
    assert logits_rows(chunk_rows=8) == {8, 5}
    # The default chunk holds every position of so small a case: the probe sees them all.
    assert logits_rows(chunk_rows=None) == {37}
