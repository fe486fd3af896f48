"""The tunebook NF4 ops: JIT build of csrc/, backend choice, and bitsandbytes interop.

TUNEBOOK_NF4_BACKEND picks the path (read on every call):
  auto          compiled kernels when they build (CPU; CUDA where torch has CUDA and a GPU),
                else the PyTorch reference (default)
  compiled      compiled kernels; an error if they do not build
  reference     the pure-PyTorch reference in reference.py
  bitsandbytes  bitsandbytes' own functions
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from finetune_core.kernels import reference

log = logging.getLogger(__name__)

BACKENDS = ("auto", "compiled", "reference", "bitsandbytes")
CSRC = Path(os.environ.get("TUNEBOOK_CSRC") or Path(__file__).resolve().parents[2] / "csrc")
# Portable binary: AVX2/FMA baseline; AVX-512 only inside target-attributed functions.
# No FMA contraction, so absmax decoding rounds exactly as bitsandbytes does.
CFLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-ffp-contract=off", "-std=c++17"]
# CUDA: Ampere and Hopper. Bitwise absmax decoding uses __fmul_rn/__fadd_rn, which nvcc never
# contracts, so the GEMV keeps its FMAs.
CUDA_ARCHS = ("80", "90")
# No -std: torch picks the one its headers need (the .cu files are C++17 and C++20 clean).
CUDA_FLAGS = ["-O3", *(f"-gencode=arch=compute_{a},code=sm_{a}" for a in CUDA_ARCHS)]
# Why each build ("cpu", "cuda") is not in use, for the worker's start-up report.
_failures: dict[str, str] = {}


def backend() -> str:
    """The backend that TUNEBOOK_NF4_BACKEND asks for ("auto" when unset)."""
    name = os.environ.get("TUNEBOOK_NF4_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"TUNEBOOK_NF4_BACKEND={name!r}; expected one of {', '.join(BACKENDS)}")
    return name


def build_dir(kind: str = "cpu") -> Path:
    """Cached build folder, keyed by the sources and flags so an edit rebuilds."""
    root = os.environ.get("FINETUNE_CORE_CACHE") or Path.home() / ".cache" / "tunebook"
    digest = hashlib.sha1()
    for src in _sources(kind):
        digest.update(src.read_bytes())
    digest.update(" ".join(CFLAGS if kind == "cpu" else CFLAGS + CUDA_FLAGS).encode())
    digest.update(torch.__version__.encode())
    name = f"tunebook_nf4_{kind}_{digest.hexdigest()[:12]}"
    path = Path(root) / "torch_extensions" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sources(kind: str = "cpu") -> list[Path]:
    shared = sorted(CSRC.glob("*.h"))  # headers both builds include (the NF4 codebook)
    if kind == "cpu":
        cpu = CSRC / "cpu"
        return (
            sorted(cpu.glob("*.cpp"))
            + sorted(cpu.glob("*/*.cpp"))
            + sorted(cpu.glob("*.h"))
            + shared
        )
    cuda = CSRC / "cuda"
    return (
        shared
        + sorted(cuda.glob("*.cpp"))
        + sorted(cuda.glob("*/*.cu"))
        + sorted(cuda.glob("*.h"))
        + sorted(cuda.glob("*.cuh"))
    )


def cuda_sources() -> list[Path]:
    """The CUDA kernel files (plain CUDA, no torch headers): what nvcc alone can compile."""
    return [p for p in _sources("cuda") if p.suffix == ".cu"]


@functools.cache
def load_extension() -> bool:
    """Build (or reuse) and load the CPU kernels; False, logged once, when that fails."""
    try:
        from torch.utils.cpp_extension import load

        cpp = [str(p) for p in _sources() if p.suffix == ".cpp"]
        if not cpp:
            raise FileNotFoundError(f"no kernel sources under {CSRC}")
        load(
            name="tunebook_nf4_cpu",
            sources=cpp,
            extra_cflags=CFLAGS,
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir()),
            is_python_module=False,
            verbose=False,
        )
    except Exception as exc:  # no compiler, no ninja, a build error: all mean "use the reference"
        _failures["cpu"] = f"{type(exc).__name__}: {exc}"
        log.warning("tunebook NF4 kernels unavailable, using the PyTorch reference: %s", exc)
        return False
    _register_fakes()
    return _agrees_with_reference("cpu")


@functools.cache
def load_cuda_extension() -> bool:
    """Build (or reuse) and load the CUDA kernels, only where torch has CUDA and sees a GPU.

    False (logged once, except on machines without CUDA, where it is simply not attempted)
    when that fails; CUDA tensors then take the PyTorch reference.
    """
    if not torch.cuda.is_available():
        return False
    if not load_extension():  # the op schemas live in the CPU extension
        _failures["cuda"] = f"the CPU extension (the ops' schemas) did not load: {_failures['cpu']}"
        return False
    try:
        build_cuda_extension()
    except Exception as exc:  # no nvcc, a toolkit / torch mismatch, a build error
        _failures["cuda"] = f"{type(exc).__name__}: {exc}"
        log.warning("tunebook CUDA NF4 kernels unavailable, using the PyTorch reference: %s", exc)
        return False
    return _agrees_with_reference("cuda")


def build_cuda_extension() -> None:
    """Compile (or reuse) and load csrc/cuda/ into the cache. Needs nvcc and a CUDA build of
    torch but no GPU, so an image build can run it (`python -m finetune_core.kernels build
    --cuda`); the explicit -gencode flags keep torch from asking a device for its arch."""
    from torch.utils.cpp_extension import load

    sources = [str(p) for p in _sources("cuda") if p.suffix in (".cpp", ".cu")]
    if not sources:
        raise FileNotFoundError(f"no CUDA kernel sources under {CSRC / 'cuda'}")
    load(
        name="tunebook_nf4_cuda",
        sources=sources,
        extra_cflags=["-O3"],
        extra_cuda_cflags=CUDA_FLAGS,
        extra_include_paths=[str(CSRC / "cuda")],
        build_directory=str(build_dir("cuda")),
        is_python_module=False,
        verbose=bool(os.environ.get("TUNEBOOK_VERBOSE_BUILD")),
    )


def load_failure(kind: str) -> str:
    """Why the `kind` ("cpu" or "cuda") kernels are not in use ("" when nothing failed)."""
    return _failures.get(kind, "")


def _agrees_with_reference(kind: str) -> bool:
    """A few blocks dequantized by the loaded op and by the reference must match bitwise: a
    kernel that loads but computes wrong (a bad flag, an unsupported CPU) is not used."""
    gen = torch.Generator().manual_seed(0)
    packed = torch.randint(0, 256, (200,), dtype=torch.uint8, generator=gen)  # 400 weights
    absmax = torch.rand(7, generator=gen) + 0.5  # plain fp32 scales, blocks of 64
    empty = torch.empty(0)
    args = [t.to(kind) for t in (packed, absmax, empty, empty)]
    args += [0.0, 64, 256, [20, 20], torch.bfloat16]
    try:
        got = torch.ops.tunebook.dequantize_nf4(*args).cpu()
    except Exception as exc:  # a library that loads but whose op cannot run here
        problem = f"dequantize_nf4 fails: {type(exc).__name__}: {exc}"
    else:
        if torch.equal(got, reference.dequantize_nf4(*args).cpu()):
            return True
        problem = "dequantize_nf4 disagrees with the PyTorch reference"
    _failures[kind] = problem
    log.warning("tunebook %s NF4 kernels failed their check: %s", kind, _failures[kind])
    return False


def _register_fakes() -> None:
    """Shape-only implementations so torch.compile / FakeTensor tracing can see the ops."""

    @torch.library.register_fake("tunebook::dequantize_nf4")
    def _(packed, qabsmax, code2, absmax2, offset, blocksize, blocksize2, shape, dtype):  # noqa: ANN001
        return packed.new_empty(tuple(shape), dtype=dtype)

    @torch.library.register_fake("tunebook::gemv_nf4")
    def _(x, packed, qabsmax, code2, absmax2, offset, blocksize, blocksize2, shape):  # noqa: ANN001
        return x.new_empty((*x.shape[:-1], shape[0]))


def _use_compiled(device: torch.device) -> bool:
    name = backend()
    if device.type == "cuda":
        if name == "compiled" and not load_cuda_extension():
            raise RuntimeError(
                "TUNEBOOK_NF4_BACKEND=compiled but the CUDA NF4 kernels did not build"
            )
        return name in ("auto", "compiled") and load_cuda_extension()
    if name == "compiled":
        if not load_extension():
            raise RuntimeError("TUNEBOOK_NF4_BACKEND=compiled but the NF4 kernels did not build")
        return True
    return name == "auto" and device.type == "cpu" and load_extension()


@dataclass(frozen=True)
class NF4Weight:
    """One NF4 weight in bitsandbytes' layout, as flat parts the ops take."""

    packed: torch.Tensor
    qabsmax: torch.Tensor  # uint8 (double quant) or fp32 (plain absmax)
    code2: torch.Tensor
    absmax2: torch.Tensor
    offset: float
    blocksize: int
    blocksize2: int
    shape: tuple[int, ...]
    dtype: torch.dtype  # the dtype the weight was quantized from

    @classmethod
    def from_bnb(cls, packed: torch.Tensor, quant_state: Any | None = None) -> NF4Weight:
        """From a bitsandbytes Params4bit (its .quant_state) or packed data plus a QuantState."""
        qs = quant_state if quant_state is not None else packed.quant_state
        if qs.quant_type != "nf4":
            raise ValueError(f"only nf4 is supported, got {qs.quant_type!r}")
        empty = torch.empty(0, dtype=torch.float32, device=qs.absmax.device)
        nested = qs.nested
        return cls(
            packed=packed.data if isinstance(packed, torch.nn.Parameter) else packed,
            qabsmax=qs.absmax if nested else qs.absmax.float(),
            code2=qs.state2.code if nested else empty,
            absmax2=qs.state2.absmax if nested else empty,
            offset=float(qs.offset) if nested else 0.0,
            blocksize=int(qs.blocksize),
            blocksize2=int(qs.state2.blocksize) if nested else 256,
            shape=tuple(int(d) for d in qs.shape),
            dtype=qs.dtype,
        )

    def quant_state(self) -> Any:
        """The equivalent bitsandbytes QuantState (for the bitsandbytes backend)."""
        from bitsandbytes.functional import QuantState, get_4bit_type

        code = get_4bit_type("nf4", device=self.packed.device)
        common = {"shape": torch.Size(self.shape), "dtype": self.dtype, "blocksize": self.blocksize}
        if self.qabsmax.dtype == torch.float32:
            return QuantState(absmax=self.qabsmax, code=code, quant_type="nf4", **common)
        state2 = QuantState(
            absmax=self.absmax2, code=self.code2, blocksize=self.blocksize2, dtype=torch.float32
        )
        offset = torch.tensor(self.offset, dtype=torch.float32, device=self.packed.device)
        return QuantState(
            absmax=self.qabsmax, code=code, quant_type="nf4", offset=offset, state2=state2, **common
        )

    def args(self) -> tuple:
        return (
            self.packed,
            self.qabsmax,
            self.code2,
            self.absmax2,
            self.offset,
            self.blocksize,
            self.blocksize2,
            list(self.shape),
        )


def dequantize(w: NF4Weight, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The full weight in dtype (default: the dtype it was quantized from)."""
    dtype = dtype or w.dtype
    if backend() == "bitsandbytes":
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(w.packed, w.quant_state(), quant_type="nf4").to(dtype)
    if _use_compiled(w.packed.device):
        return torch.ops.tunebook.dequantize_nf4(*w.args(), dtype)
    return reference.dequantize_nf4(*w.args(), dtype)


def matmul(x: torch.Tensor, w: NF4Weight) -> torch.Tensor:
    """x @ W.T (W is [out_features, in_features]) in x's dtype."""
    if backend() == "bitsandbytes":
        import bitsandbytes as bnb

        return bnb.matmul_4bit(x, w.packed, quant_state=w.quant_state())
    if _use_compiled(x.device):
        return torch.ops.tunebook.gemv_nf4(x, *w.args())
    return reference.gemv_nf4(x, *w.args())


def dequantize_nf4(
    packed: torch.Tensor,
    qabsmax: torch.Tensor,
    code2: torch.Tensor,
    absmax2: torch.Tensor,
    offset: float,
    blocksize: int,
    blocksize2: int,
    shape: Sequence[int],
    dtype: torch.dtype,
) -> torch.Tensor:
    """Flat-argument form of `dequantize` (the op's own signature)."""
    w = NF4Weight(
        packed, qabsmax, code2, absmax2, offset, blocksize, blocksize2, tuple(shape), dtype
    )
    return dequantize(w, dtype)


def gemv_nf4(
    x: torch.Tensor,
    packed: torch.Tensor,
    qabsmax: torch.Tensor,
    code2: torch.Tensor,
    absmax2: torch.Tensor,
    offset: float,
    blocksize: int,
    blocksize2: int,
    shape: Sequence[int],
) -> torch.Tensor:
    """Flat-argument form of `matmul` (the op's own signature)."""
    w = NF4Weight(
        packed, qabsmax, code2, absmax2, offset, blocksize, blocksize2, tuple(shape), x.dtype
    )
    return matmul(x, w)
