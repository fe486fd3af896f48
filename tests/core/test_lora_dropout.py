"""The adapter's input dropout fused into lora_A (finetune_core/train/lora_dropout.py):
the drop rate asked for, the same gradients as dropout then linear with the same mask,
the same mask when gradient checkpointing recomputes a layer, less memory kept for the
backward pass, and a model whose adapter is unchanged for saving and evaluation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from finetune_core.data.pack import collate
from finetune_core.models import load_tokenizer
from finetune_core.train.lora_dropout import (
    LEVELS,
    DropoutLinear,
    keep_mask,
    keep_scale,
    keep_threshold,
    mask_seed,
    random_lanes,
)
from finetune_core.train.recipe import token_loss
from finetune_core.train.setup import build_model, prepare_rows
from tests.core.test_train import config

CPU = torch.device("cpu")


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_the_mask_drops_at_the_rate_asked_and_keeps_the_expectation(p: float) -> None:
    shape = torch.Size([1000, 1000])
    mask = keep_mask(random_lanes(1234, shape, CPU), p)
    assert mask.dtype == torch.float32 and mask.shape == shape
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    dropped = 1 - float(mask.mean())
    assert abs(dropped - p) < 0.002  # 1e6 draws: the standard error is under 0.0005
    assert abs(keep_threshold(p) / LEVELS - p) <= 0.5 / LEVELS
    # Kept values are scaled by the inverse of the exact keep rate: the mean is kept.
    assert keep_scale(p) * (1 - keep_threshold(p) / LEVELS) == pytest.approx(1.0)
    # Every lane of every 64-bit draw is random: each quarter of a row drops at p too.
    for lane in range(4):
        assert abs(1 - float(mask.view(-1, 4)[:, lane].mean()) - p) < 0.004
    # A mask is a pure function of its seed; the seed comes from torch's generator.
    assert torch.equal(mask, keep_mask(random_lanes(1234, shape, CPU), p))
    assert not torch.equal(mask, keep_mask(random_lanes(1235, shape, CPU), p))
    torch.manual_seed(5)
    first = mask_seed()
    torch.manual_seed(5)
    assert mask_seed() == first
    # Odd sizes (not a multiple of the four lanes of a draw) are whole masks too.
    assert keep_mask(random_lanes(1, torch.Size([3, 7]), CPU), p).shape == (3, 7)


def test_outputs_and_gradients_are_dropout_then_linear_with_the_same_mask() -> None:
    p = 0.3
    layer = torch.nn.Linear(24, 5, bias=False)
    layer.__class__ = DropoutLinear
    layer.p = p
    x = torch.randn(2, 9, 24, requires_grad=True)
    torch.manual_seed(7)
    out = layer(x)
    (out * torch.arange(5.0)).sum().backward()
    got = (x.grad.clone(), layer.weight.grad.clone())
    x.grad, layer.weight.grad = None, None
    torch.manual_seed(7)  # the same seed: the same mask
    mask = keep_mask(random_lanes(mask_seed(), x.shape, x.device), p)
    expected = torch.nn.functional.linear(x * mask * keep_scale(p), layer.weight)
    (expected * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(got[0], x.grad)
    torch.testing.assert_close(got[1], layer.weight.grad)
    assert 0 < int(mask.sum()) < mask.numel()  # some dropped, some kept
    layer.eval()  # no dropout outside training
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight))


def _batch(tmp_path: Path) -> dict[str, torch.Tensor]:
    cfg = config(tmp_path, "rows")
    rows, _, _ = prepare_rows(cfg, load_tokenizer(cfg.model))
    return collate(rows[:2], 0)


def _same_adapter(src: torch.nn.Module, *others: torch.nn.Module) -> None:
    """Random adapter weights in `src` (peft starts lora_B at zero, which would leave
    lora_A's gradients zero and the adapter's output nothing), copied into `others`."""
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for param in src.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        mine = dict(src.named_parameters())
        for dst in others:
            for name, param in dst.named_parameters():
                if param.requires_grad:
                    param.copy_(mine[name])


def _grads(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model.train()
    torch.manual_seed(3)
    loss, _ = token_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


def test_checkpointing_recomputes_the_same_mask(tmp_path: Path) -> None:
    batch = _batch(tmp_path)
    kept, recomputed = (
        build_model(config(tmp_path, name, gradient_checkpointing=ckpt, lora_dropout=0.3))
        for name, ckpt in (("kept", "off"), ("recomputed", "on"))
    )
    plain = build_model(config(tmp_path, "plain", gradient_checkpointing="off", lora_dropout=0.0))
    _same_adapter(kept, recomputed, plain)
    a, b = _grads(kept, batch), _grads(recomputed, batch)
    assert a.keys() == b.keys() and a
    assert all(float(g.abs().max()) > 0 for g in a.values())  # lora_A's too
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)
    # The dropout mattered: without it the gradients differ.
    c = _grads(plain, batch)
    assert any(not torch.allclose(a[n], c[n], atol=1e-6) for n in a)


def _saved_bytes(model: torch.nn.Module, run: Callable[[], torch.Tensor]) -> int:
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def test_fused_adapters_keep_less_for_the_backward_pass_and_save_the_same(
    tmp_path: Path,
) -> None:
    batch = _batch(tmp_path)
    cfg = config(tmp_path, "m", gradient_checkpointing="off", lora_dropout=0.1)
    fused, stock = build_model(cfg), build_model(cfg, fused_dropout=False)
    _same_adapter(fused, stock)
    assert fused.state_dict().keys() == stock.state_dict().keys()
    n_fused = sum(isinstance(m, DropoutLinear) for m in fused.modules())
    assert n_fused == sum(isinstance(m, torch.nn.Dropout) for m in stock.modules()) > 0
    fused.train(), stock.train()
    mine = _saved_bytes(fused, lambda: token_loss(fused, batch)[0])
    theirs = _saved_bytes(stock, lambda: token_loss(stock, batch)[0])
    assert mine < 0.9 * theirs, (mine, theirs)
    # Evaluation: no dropout in either, the same losses.
    fused.eval(), stock.eval()
    with torch.no_grad():
        torch.testing.assert_close(token_loss(fused, batch)[0], token_loss(stock, batch)[0])


def test_dora_keeps_peft_dropout(tmp_path: Path) -> None:
    model = build_model(config(tmp_path, "dora", method="dora", lora_dropout=0.1))
    assert not any(isinstance(m, DropoutLinear) for m in model.modules())
    assert any(isinstance(m, torch.nn.Dropout) for m in model.modules())


def test_an_adapted_embedding_keeps_its_own_path(tmp_path: Path) -> None:
    # peft's LoRA embedding has a lora_dropout entry but no lora_A: nothing to fuse there.
    cfg = config(tmp_path, "emb", target_modules=["embed_tokens", "q_proj"], lora_dropout=0.1)
    model = build_model(cfg)
    assert sum(isinstance(m, DropoutLinear) for m in model.modules()) > 0  # q_proj's
    embedding = model.get_base_model().get_input_embeddings()
    assert isinstance(embedding.lora_dropout["default"], torch.nn.Dropout)
