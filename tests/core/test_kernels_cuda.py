"""CUDA NF4 kernels (csrc/cuda/). Everywhere: nvcc compiles every .cu file for sm_80 and sm_90,
and the torch binding passes a syntax check against torch's headers, so a typo fails `make test`
on a machine without a GPU. With a GPU (marked `cuda`): bitwise equality with bitsandbytes'
CUDA dequantize, GEMV against float64 for batches 1-16 and the large-batch path, opcheck, the
fallback kernels and the Linear4bit patch."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finetune_core.kernels import ops

NVCC = shutil.which("nvcc") or next(
    (p for p in ["/usr/local/cuda/bin/nvcc"] if Path(p).exists()), None
)
ARCH_FLAGS = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ops.CUDA_ARCHS]
HAS_GPU = torch.cuda.is_available()


def _stamp(tag: str, *parts: bytes) -> Path:
    """A marker in the build cache keyed by the inputs: unchanged sources compile once."""
    digest = hashlib.sha1(tag.encode())
    for p in parts:
        digest.update(p)
    root = Path(os.environ.get("FINETUNE_CORE_CACHE") or Path.home() / ".cache" / "tunebook")
    return root / "torch_extensions" / "compile_checks" / f"{tag}_{digest.hexdigest()[:16]}.ok"


def _headers() -> bytes:
    return b"".join(p.read_bytes() for p in ops._sources("cuda") if p.suffix in (".h", ".cuh"))


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
def test_cuda_kernels_compile_for_sm80_and_sm90(tmp_path):
    version = subprocess.run([NVCC, "--version"], capture_output=True, text=True).stdout
    procs, stamps = [], []
    for src in ops.cuda_sources():
        stamp = _stamp(
            src.stem, src.read_bytes(), _headers(), version.encode(), *map(str.encode, ARCH_FLAGS)
        )
        if stamp.exists():
            continue
        cmd = [NVCC, "-std=c++17", "-O3", *ARCH_FLAGS, "-Werror", "all-warnings"]
        cmd += ["-c", str(src), "-o", str(tmp_path / f"{src.stem}.o")]
        procs.append(
            (
                src,
                subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            )
        )
        stamps.append(stamp)
    for (src, proc), stamp in zip(procs, stamps, strict=True):
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"nvcc failed on {src}:\n{out}"
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()
    assert ops.cuda_sources(), "no .cu files found under csrc/cuda"


def _cuda_include() -> Path | None:
    for p in [Path(NVCC).resolve().parents[1] if NVCC else None, Path("/usr/local/cuda")]:
        if p is not None and (p / "include" / "cuda_runtime_api.h").exists():
            return p / "include"
    return None


TORCH_INCLUDE = Path(torch.__file__).parent / "include"


@pytest.mark.skipif(
    _cuda_include() is None
    or not (TORCH_INCLUDE / "c10" / "cuda" / "CUDAGuard.h").exists()
    or shutil.which("g++") is None,
    reason="needs g++, the CUDA runtime headers and torch's c10/cuda headers",
)
def test_cuda_binding_syntax(tmp_path):
    # CPU builds of torch ship c10/cuda headers but not the CMake-generated macros header.
    stub = tmp_path / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    src = ops.CSRC / "cuda" / "ops_cuda.cpp"
    stamp = _stamp("ops_cuda", src.read_bytes(), _headers(), torch.__version__.encode())
    if stamp.exists():
        return
    cmd = ["g++", "-std=c++17", "-fsyntax-only", "-w", f"-I{tmp_path}", f"-I{TORCH_INCLUDE}"]
    cmd += [f"-I{TORCH_INCLUDE / 'torch/csrc/api/include'}", f"-I{_cuda_include()}"]
    cmd += [f"-I{ops.CSRC / 'cuda'}", str(src)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()


def test_no_gpu_falls_back_cleanly(monkeypatch):
    if HAS_GPU:
        pytest.skip("a GPU is present")
    assert ops.load_cuda_extension() is False
    monkeypatch.setenv("TUNEBOOK_NF4_BACKEND", "auto")
    assert ops._use_compiled(torch.device("cuda")) is False


# ---- on a GPU -------------------------------------------------------------------------------

cuda = pytest.mark.cuda
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
SHAPES = [
    (1, 64),
    (3, 130),
    (257, 511),
    (1024, 4096),
    (5, 7),
    (1, 1),
    (7, 33),
    (576, 576),
    (192, 576),
    (96, 1536),
    (3, 80),
]


@functools.cache
def quantize_cuda(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0, nested: bool = True):
    import bitsandbytes.functional as bnbf

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g).to(dtype).cuda()
    packed, qs = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=nested, quant_type="nf4")
    return packed, qs


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32 if t.element_size() == 4 else torch.int16)


@pytest.fixture
def cuda_ext():
    pytest.importorskip("bitsandbytes")
    if not ops.load_cuda_extension():
        pytest.fail("a GPU is present but the CUDA NF4 kernels did not build (see the log)")


@cuda
@needs_gpu
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nested", [True, False])
def test_cuda_dequantize_bitwise_equal_to_bitsandbytes(shape, dtype, nested, cuda_ext):
    import bitsandbytes.functional as bnbf

    packed, qs = quantize_cuda(shape, dtype, nested=nested)
    expected = bnbf.dequantize_4bit(packed, qs, quant_type="nf4")
    w = ops.NF4Weight.from_bnb(packed, qs)
    ours = torch.ops.tunebook.dequantize_nf4(*w.args(), dtype)
    assert ours.is_cuda and ours.shape == expected.shape and ours.dtype == dtype
    assert torch.equal(_bits(ours), _bits(expected))
    ref = ops.reference.dequantize_nf4(*w.args(), dtype)
    assert torch.equal(_bits(ours), _bits(ref))


@cuda
@needs_gpu
def test_cuda_dequantize_unaligned_takes_scalar_kernel(cuda_ext):
    packed, qs = quantize_cuda((64, 256), torch.bfloat16, seed=3)
    w = ops.NF4Weight.from_bnb(packed, qs)
    # Same bytes at an odd address: the 16-byte path must not be taken.
    buf = torch.empty(packed.numel() + 1, dtype=torch.uint8, device="cuda")
    buf[1:].copy_(packed.view(torch.uint8).reshape(-1))
    args = list(w.args())
    args[0] = buf[1:]
    expected = torch.ops.tunebook.dequantize_nf4(*w.args(), torch.bfloat16)
    got = torch.ops.tunebook.dequantize_nf4(*args, torch.bfloat16)
    assert torch.equal(_bits(got), _bits(expected))


TOL = {torch.float32: 2e-5, torch.bfloat16: 1.5e-2, torch.float16: 2e-3}


@cuda
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(576, 576), (1536, 576), (96, 130), (33, 4096), (5, 7)])
def test_cuda_gemv_against_float64(dtype, shape, cuda_ext):
    packed, qs = quantize_cuda(shape, torch.bfloat16, seed=1)
    w = ops.NF4Weight.from_bnb(packed, qs)
    w64 = ops.reference.dequantize_nf4(*w.args(), torch.float64)
    g = torch.Generator().manual_seed(7)
    for rows in [*range(1, 17), 17, 40]:  # every fused batch size, then dequantize + cuBLAS
        x = torch.randn(rows, shape[1], generator=g).to(dtype).cuda()
        y = torch.ops.tunebook.gemv_nf4(x, *w.args())
        ref = x.double() @ w64.t()
        assert y.dtype == dtype and y.shape == (rows, shape[0])
        err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
        assert err < TOL[dtype] * (1 if rows <= 16 else 4), (rows, err)


@cuda
@needs_gpu
def test_cuda_gemv_3d_input_matches_bitsandbytes(cuda_ext):
    import bitsandbytes as bnb

    packed, qs = quantize_cuda((384, 512), torch.bfloat16, seed=11)
    for rows in (1, 16):
        x = torch.randn(1, rows, 512, device="cuda").to(torch.bfloat16)
        expected = bnb.matmul_4bit(x, packed, quant_state=qs).float()
        got = ops.matmul(x, ops.NF4Weight.from_bnb(packed, qs)).float()
        assert got.shape == expected.shape
        assert ((got - expected).abs().max() / expected.abs().max()).item() < 2e-2


@cuda
@needs_gpu
def test_cuda_opcheck_and_compile(cuda_ext):
    packed, qs = quantize_cuda((64, 192), torch.bfloat16, seed=2)
    w = ops.NF4Weight.from_bnb(packed, qs)
    torch.library.opcheck(torch.ops.tunebook.dequantize_nf4.default, (*w.args(), torch.bfloat16))
    for rows in (2, 20):
        x = torch.randn(rows, 192, dtype=torch.bfloat16, device="cuda")
        torch.library.opcheck(torch.ops.tunebook.gemv_nf4.default, (x, *w.args()))

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.tunebook.gemv_nf4(x * 2, *w.args()).relu()

    x = torch.randn(3, 192, dtype=torch.bfloat16, device="cuda")
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), f(x))


@cuda
@needs_gpu
@pytest.mark.parametrize("rows", [1, 24])
def test_cuda_patched_linear4bit_forward_backward(rows, cuda_ext):
    import bitsandbytes as bnb

    from finetune_core.kernels import linear

    was_patched = linear._original_forward is not None
    linear.disable_linear4bit_patch()
    torch.manual_seed(0)
    lin = bnb.nn.Linear4bit(192, 96, bias=True, compute_dtype=torch.bfloat16, quant_type="nf4")
    lin.weight = bnb.nn.Params4bit(torch.randn(96, 192), requires_grad=False, quant_type="nf4")
    lin.bias = torch.nn.Parameter(torch.randn(96))
    lin = lin.cuda()
    x0 = torch.randn(2, rows, 192, device="cuda", dtype=torch.bfloat16)

    def run() -> tuple[torch.Tensor, ...]:
        x = x0.clone().requires_grad_(True)
        lin.bias.grad = None
        y = lin(x)
        (y.float() * torch.linspace(-1, 1, 96, device="cuda")).sum().backward()
        return y.detach().float(), x.grad.float(), lin.bias.grad.float().clone()

    try:
        expected = run()
        with linear.patch_linear4bit():
            patched = run()
    finally:
        if was_patched:
            linear.enable_linear4bit_patch()
    for got, want in zip(patched, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=3e-2, atol=3e-2)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
