"""csrc/ NF4 kernels: bitwise equality with bitsandbytes, GEMV accuracy, op registration,
the PyTorch fallback and the Linear4bit patch. Random weights and inputs throughout."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")
import bitsandbytes.functional as bnbf  # noqa: E402

from finetune_core.kernels import (  # noqa: E402
    NF4Weight,
    dequantize,
    load_extension,
    matmul,
    patch_linear4bit,
    reference,
)

needs_ext = pytest.mark.skipif(not load_extension(), reason="NF4 kernels did not build here")
DTYPES = [torch.bfloat16, torch.float32, torch.float16]
# Odd, tiny and large shapes; numel need not be even or a multiple of the blocksize.
SHAPES = [(1, 64), (3, 130), (257, 511), (1024, 4096), (5, 7), (1, 1), (7, 33), (64, 64)]
# Last dim a multiple of 16 but not 64: bitsandbytes 0.50.2's AVX-512 CPU dequantize indexes
# absmax per row there (disagreeing with its own quantizer); its flat (1-D) call is correct.
ROWWISE_BUG_SHAPES = [(3, 80), (2, 96)]


@functools.cache  # shared across tests: bitsandbytes' quantizer dominates the runtime
def quantize(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0, nested: bool = True):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g).to(dtype)
    packed, qs = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=nested, quant_type="nf4")
    return w, packed, qs


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32 if t.element_size() == 4 else torch.int16)


@needs_ext
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dequantize_bitwise_equal_to_bitsandbytes(shape, dtype, isa):
    _, packed, qs = quantize(shape, dtype)
    expected = bnbf.dequantize_4bit(packed, qs, quant_type="nf4")
    ours = torch.ops.tunebook.dequantize_nf4(*NF4Weight.from_bnb(packed, qs).args(), dtype)
    assert ours.shape == expected.shape and ours.dtype == dtype
    assert torch.equal(bits(ours), bits(expected))


@needs_ext
@pytest.mark.parametrize("shape", ROWWISE_BUG_SHAPES)
def test_dequantize_matches_bitsandbytes_flat_layout(shape):
    _, packed, qs = quantize(shape, torch.bfloat16)
    flat = NF4Weight.from_bnb(packed, qs)
    qs = copy.copy(qs)
    qs.shape = torch.Size([shape[0] * shape[1]])
    expected = bnbf.dequantize_4bit(packed, qs, quant_type="nf4").reshape(shape)
    assert torch.equal(bits(dequantize(flat)), bits(expected))


@needs_ext
def test_dequantize_plain_absmax_and_reference_bitwise(monkeypatch):
    _, packed, qs = quantize((130, 257), torch.bfloat16, nested=False)
    w = NF4Weight.from_bnb(packed, qs)
    expected = bnbf.dequantize_4bit(packed, qs, quant_type="nf4")
    assert torch.equal(bits(dequantize(w)), bits(expected))
    monkeypatch.setenv("TUNEBOOK_NF4_BACKEND", "reference")
    assert torch.equal(bits(dequantize(w)), bits(expected))


@pytest.mark.parametrize("shape", SHAPES[:4] + ROWWISE_BUG_SHAPES)
def test_reference_dequantize_bitwise(shape):
    _, packed, qs = quantize(shape, torch.float32, seed=3)
    w = NF4Weight.from_bnb(packed, qs)
    got = reference.dequantize_nf4(*w.args(), torch.float32)
    qs = copy.copy(qs)
    qs.shape = torch.Size([got.numel()])  # flat call: correct for every shape (see above)
    expected = bnbf.dequantize_4bit(packed, qs, quant_type="nf4")
    assert torch.equal(bits(got).reshape(-1), bits(expected).reshape(-1))


TOL = {torch.float32: 2e-5, torch.bfloat16: 1.5e-2, torch.float16: 2e-3}


@needs_ext
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
# (300, 1536) and (64, 4096): rows of 24 and 64 blocks, so a row's scales come 16 per gather
# and some groups straddle an absmax2 entry (256 blocks) and fall back to the scalar decode.
@pytest.mark.parametrize("shape", [(576, 576), (96, 130), (300, 1536), (64, 4096)])
def test_gemv_against_float64(dtype, shape, isa):
    _, packed, qs = quantize(shape, torch.bfloat16, seed=1)
    w = NF4Weight.from_bnb(packed, qs)
    w64 = reference.dequantize_nf4(*w.args(), torch.float64)
    g = torch.Generator().manual_seed(7)
    for rows in [1, 2, 3, 4, 5, 6, 7, 8, 12, 33]:  # fused kernels per batch size, then tiled
        x = torch.randn(rows, shape[1], generator=g).to(dtype)
        y = torch.ops.tunebook.gemv_nf4(x, *w.args())
        ref = x.double() @ w64.t()
        assert y.dtype == dtype and y.shape == (rows, shape[0])
        err = (y.double() - ref).abs().max() / ref.abs().max()
        assert err < TOL[dtype] * (1 if rows <= 8 else 2), rows


@needs_ext
@pytest.mark.parametrize("rows", [1, 4, 8, 40])
def test_gemv_against_bitsandbytes_matmul(rows):
    _, packed, qs = quantize((384, 512), torch.bfloat16, seed=11)
    x = torch.randn(2, rows, 512).to(torch.bfloat16)  # 3-D input like a batch of sequences
    expected = bnb.matmul_4bit(x, packed, quant_state=qs).float()
    got = matmul(x, NF4Weight.from_bnb(packed, qs)).float()
    assert got.shape == expected.shape
    assert (got - expected).abs().max() / expected.abs().max() < 2e-2


@needs_ext
def test_reference_and_bitsandbytes_backends_agree(monkeypatch):
    _, packed, qs = quantize((192, 576), torch.bfloat16, seed=5)
    w = NF4Weight.from_bnb(packed, qs)
    x = torch.randn(3, 576, dtype=torch.float32)
    results = {}
    for name in ["compiled", "reference", "bitsandbytes"]:
        monkeypatch.setenv("TUNEBOOK_NF4_BACKEND", name)
        results[name] = (dequantize(w), matmul(x, w))
    for name in ["reference", "bitsandbytes"]:
        assert torch.equal(bits(results[name][0]), bits(results["compiled"][0]))
        torch.testing.assert_close(results[name][1], results["compiled"][1], rtol=1e-4, atol=1e-4)


def test_unknown_backend_is_an_error(monkeypatch):
    monkeypatch.setenv("TUNEBOOK_NF4_BACKEND", "cuda-magic")
    _, packed, qs = quantize((4, 64), torch.float32)
    with pytest.raises(ValueError, match="TUNEBOOK_NF4_BACKEND"):
        dequantize(NF4Weight.from_bnb(packed, qs))


@needs_ext
def test_opcheck():
    _, packed, qs = quantize((64, 192), torch.bfloat16, seed=2)
    w = NF4Weight.from_bnb(packed, qs)
    torch.library.opcheck(torch.ops.tunebook.dequantize_nf4.default, (*w.args(), torch.bfloat16))
    for rows in (2, 12):
        x = torch.randn(rows, 192, dtype=torch.bfloat16)
        torch.library.opcheck(torch.ops.tunebook.gemv_nf4.default, (x, *w.args()))


@needs_ext
def test_torch_compile_through_fake_impl():
    _, packed, qs = quantize((64, 128), torch.float32, seed=4)
    w = NF4Weight.from_bnb(packed, qs)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.tunebook.gemv_nf4(x * 2, *w.args()).relu()

    x = torch.randn(3, 128)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), f(x))


def _linear(bias: bool):
    # in_features a multiple of 64: see ROWWISE_BUG_SHAPES (bitsandbytes' own CPU forward would
    # use wrong scales otherwise, so there would be nothing sound to compare against).
    torch.manual_seed(0)
    lin = bnb.nn.Linear4bit(192, 96, bias=bias, compute_dtype=torch.float32, quant_type="nf4")
    with torch.no_grad():
        lin.weight = bnb.nn.Params4bit(torch.randn(96, 192), requires_grad=False, quant_type="nf4")
        if bias:
            lin.bias = torch.nn.Parameter(torch.randn(96))
    return lin.to("cpu")


@pytest.fixture
def stock_linear4bit():
    """Start from bitsandbytes' own forward: loading an nf4 model elsewhere in the
    session installs our patch process-wide; put it back afterwards."""
    from finetune_core.kernels import linear

    was_patched = linear._original_forward is not None
    linear.disable_linear4bit_patch()
    yield
    if was_patched:
        linear.enable_linear4bit_patch()


@needs_ext
@pytest.mark.parametrize("rows", [1, 24])
def test_patched_linear4bit_forward_backward(rows, stock_linear4bit):
    lin = _linear(bias=True)
    x0 = torch.randn(2, rows, 192)

    def run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x0.clone().requires_grad_(True)
        lin.bias.grad = None
        y = lin(x)
        (y * torch.linspace(-1, 1, 96)).sum().backward()
        return y.detach(), x.grad, lin.bias.grad.clone()

    expected = run()
    with patch_linear4bit():
        assert bnb.nn.Linear4bit.forward.__module__ == "finetune_core.kernels.linear"
        patched = run()
    assert bnb.nn.Linear4bit.forward.__module__.startswith("bitsandbytes")
    for got, want in zip(patched, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@needs_ext
def test_large_outputs_use_recycled_buffers_correctly():
    # >= 32 MiB outputs come from the huge-page buffer cache: reuse must not leak old values.
    _, packed, qs = quantize((2048, 4096), torch.float32, seed=9)
    w = NF4Weight.from_bnb(packed, qs)
    expected = bits(bnbf.dequantize_4bit(packed, qs, quant_type="nf4"))
    first = dequantize(w)
    ptr = first.data_ptr()
    assert torch.equal(bits(first), expected)
    first.fill_(7.0)
    del first
    second = dequantize(w)
    assert second.data_ptr() == ptr  # recycled
    assert torch.equal(bits(second), expected)


@needs_ext
def test_patched_linear4bit_inference_skips_autograd(stock_linear4bit):
    lin = _linear(bias=True)
    x = torch.randn(3, 192)
    with patch_linear4bit():
        with torch.no_grad():
            fast = lin(x)
        assert fast.grad_fn is None
        graph = lin(x.requires_grad_(True))
    assert graph.grad_fn is not None
    torch.testing.assert_close(fast, graph.detach(), rtol=0, atol=0)
