"""The fused bf16 GEMV (csrc/cpu/gemv_nf4/gemv_bf16.cpp, AVX512-BF16 CPUs, 1-16 rows of x):
every batch size against a float64 reference, on row counts that leave short row groups,
blocksizes above 64, plain absmax, and both ISAs. Random weights and inputs throughout."""

from __future__ import annotations

import functools

import pytest
import torch

pytest.importorskip("bitsandbytes")
import bitsandbytes.functional as bnbf  # noqa: E402

from finetune_core.kernels import NF4Weight, load_extension, reference  # noqa: E402

needs_ext = pytest.mark.skipif(not load_extension(), reason="NF4 kernels did not build here")
# bf16 output rounding (2^-9 relative) plus bf16-rounded weights: well inside this.
TOL = 1.5e-2


@functools.cache
def quantize(shape: tuple[int, int], blocksize: int = 64, nested: bool = True, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g).to(torch.bfloat16)
    packed, qs = bnbf.quantize_4bit(
        w, blocksize=blocksize, compress_statistics=nested, quant_type="nf4"
    )
    nf4 = NF4Weight.from_bnb(packed, qs)
    return nf4, reference.dequantize_nf4(*nf4.args(), torch.float64)


def rel_err(nf4: NF4Weight, w64: torch.Tensor, x: torch.Tensor) -> float:
    y = torch.ops.tunebook.gemv_nf4(x, *nf4.args())
    assert y.dtype == x.dtype and y.shape == (*x.shape[:-1], w64.shape[0])
    ref = x.double() @ w64.t()
    return float((y.double() - ref).abs().max() / ref.abs().max())


@needs_ext
# N: short groups of 16 output rows and row blocks of 2 and 4 (37, 1001); K: an odd number of
# 64-element chunks (576), rows whose scales straddle an absmax2 entry (1536), a large K (4096).
@pytest.mark.parametrize("shape", [(37, 576), (1001, 192), (300, 1536), (64, 4096)])
def test_every_batch_size_against_float64(shape, isa):
    nf4, w64 = quantize(shape, seed=1)
    g = torch.Generator().manual_seed(3)
    for rows in [*range(1, 17), 17, 33]:  # every fused kernel (halves above 8), then tiled
        x = torch.randn(rows, shape[1], generator=g).to(torch.bfloat16)
        assert rel_err(nf4, w64, x) < TOL * (1 if rows <= 16 else 2), rows


@needs_ext
@pytest.mark.parametrize("blocksize", [128, 256])
@pytest.mark.parametrize("nested", [True, False])
def test_larger_blocksizes_and_plain_absmax(blocksize, nested):
    nf4, w64 = quantize((130, 1024), blocksize=blocksize, nested=nested, seed=2)
    g = torch.Generator().manual_seed(4)
    for rows in (1, 2, 3, 4, 5, 8, 9, 16):
        x = torch.randn(rows, 1024, generator=g).to(torch.bfloat16)
        assert rel_err(nf4, w64, x) < TOL, rows


@needs_ext
def test_batched_input_shape_and_kernel_switch(monkeypatch):
    nf4, w64 = quantize((96, 640), seed=5)
    x = torch.randn(2, 3, 640).to(torch.bfloat16)  # 6 rows of x through the leading dims
    fused = torch.ops.tunebook.gemv_nf4(x, *nf4.args())
    assert rel_err(nf4, w64, x) < TOL
    monkeypatch.setenv("TUNEBOOK_NF4_NO_BF16DOT", "1")  # the fp32 kernel instead
    plain = torch.ops.tunebook.gemv_nf4(x, *nf4.args())
    diff = (fused.double() - plain.double()).abs().max() / plain.double().abs().max()
    assert diff < TOL


@needs_ext
def test_opcheck_bf16_batches():
    nf4, _ = quantize((48, 256), seed=6)
    for rows in (1, 3, 9, 16):
        x = torch.randn(rows, 256, dtype=torch.bfloat16)
        torch.library.opcheck(torch.ops.tunebook.gemv_nf4.default, (x, *nf4.args()))
