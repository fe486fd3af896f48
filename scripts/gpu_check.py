"""make gpu-check: build the CUDA NF4 kernels, check them against bitsandbytes and a float64
reference, and time them against bitsandbytes, in one run with a printed table and JSON.

    python scripts/gpu_check.py [--wheel-dir .whl] [--json out.json] [--quick]

Exit status: 0 all checks passed; 1 a mismatch or a failed build; 2 no CUDA GPU (the CPU parts,
the nvcc compile of csrc/cuda and the CPU kernels' bitwise check, still ran).

Correctness: dequantize is bitwise equal to bitsandbytes.functional.dequantize_4bit (bf16, fp16,
fp32; nested and plain absmax; blocksizes 64/128/256; odd shapes; an unaligned packed pointer
for the scalar kernel). GEMV for 1-16 rows (and the >16-row dequantize + cuBLAS path) against
a float64 reference and against bitsandbytes.matmul_4bit.

Timing: CUDA graphs of back-to-back calls (eager timing if a graph cannot be captured), the
weight rotated over enough copies to exceed the L2 cache so every call reads HBM; median of 5.
dequant GB/s = packed nibbles read + bf16 written; GEMV GB/s = packed weight read; the bf16
copy ceiling counts read + written.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# The same build cache as the pytest run below (tests/core/conftest.py), so nothing builds twice.
os.environ.setdefault("FINETUNE_CORE_CACHE", str(REPO / ".cache"))

import torch  # noqa: E402

SHAPES = {
    "ffn 14336x4096": (14336, 4096),
    "smollm2 q/o 576x576": (576, 576),
    "smollm2 k/v 192x576": (192, 576),
    "smollm2 up 1536x576": (1536, 576),
    "smollm2 down 576x1536": (576, 1536),
}
DQ_SHAPES = [
    (1, 1), (5, 7), (1, 64), (3, 80), (3, 130), (7, 33), (257, 511), (64, 64), (576, 576),
    (192, 576), (1536, 576), (576, 1536), (1024, 4096), (4099, 67),
]  # fmt: skip
GEMV_SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (4096, 4096), (96, 130), (5, 7),
               (33, 4096), (300, 2048)]  # fmt: skip
TOL = {torch.float32: 2e-5, torch.bfloat16: 1.5e-2, torch.float16: 2e-3}
# bitsandbytes dequantizes to the weight's dtype (bf16 here) before multiplying, so it differs
# from the exact product by about a bf16 rounding of each weight.
BNB_TOL = {torch.float32: 5e-3, torch.bfloat16: 3e-2, torch.float16: 5e-3}
DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def log(msg: str) -> None:
    print(msg, flush=True)


# ---- set-up ---------------------------------------------------------------------------------


def ensure_bitsandbytes(wheel_dir: Path) -> str:
    """Import bitsandbytes, first installing a carried wheel (--no-deps) when it is missing."""
    try:
        return importlib.import_module("bitsandbytes").__version__
    except ImportError:
        pass
    wheels = sorted(glob.glob(str(wheel_dir / "bitsandbytes-*.whl")))
    if not wheels:
        raise SystemExit(
            f"bitsandbytes is not installed and no bitsandbytes-*.whl is in {wheel_dir}; carry one "
            "(see csrc/README.md, 'gpu-check')"
        )
    target = Path(tempfile.gettempdir()) / "tunebook_bnb_site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    cmd += ["--no-compile", "--upgrade", "--target", str(target), wheels[-1]]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:  # no pip: a wheel is a zip file
        log(f"pip install failed ({res.stderr.strip()[-300:]}); unpacking the wheel")
        with zipfile.ZipFile(wheels[-1]) as zf:
            zf.extractall(target)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(target), os.environ.get("PYTHONPATH")])
    )
    log(f"installed {Path(wheels[-1]).name} into {target}")
    return importlib.import_module("bitsandbytes").__version__


def nvcc_compile_check() -> dict:
    """nvcc -c of every csrc/cuda .cu for sm_80 and sm_90 (what make test does, without a GPU)."""
    from finetune_core.kernels import ops

    nvcc = shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None
    )
    if nvcc is None:
        return {"ok": None, "note": "nvcc not found"}
    arch = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ops.CUDA_ARCHS]
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for src in ops.cuda_sources():
            cmd = [nvcc, "-std=c++17", "-O3", *arch, "-c", str(src), "-o", f"{tmp}/{src.stem}.o"]
            procs.append(
                (
                    src.name,
                    subprocess.Popen(
                        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                    ),
                )
            )  # noqa: E501
        errors = {name: p.communicate()[0] for name, p in procs if p.wait() != 0}
    return {"ok": not errors, "errors": errors}


def cpu_bitwise_check() -> dict:
    """The CPU kernels (csrc/cpu) against bitsandbytes' CPU dequantize on a few shapes."""
    import bitsandbytes.functional as bnbf

    from finetune_core.kernels import ops

    if not ops.load_extension():
        return {"ok": False, "note": "CPU kernels did not build"}
    bad = []
    for shape in [(5, 7), (257, 511), (576, 576)]:
        w = torch.randn(shape).to(torch.bfloat16)
        packed, qs = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
        ours = torch.ops.tunebook.dequantize_nf4(
            *ops.NF4Weight.from_bnb(packed, qs).args(), torch.bfloat16
        )
        if not torch.equal(
            ours.view(torch.int16), bnbf.dequantize_4bit(packed, qs).view(torch.int16)
        ):
            bad.append(shape)
    return {"ok": not bad, "mismatches": bad}


# ---- correctness on the GPU -----------------------------------------------------------------


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32 if t.element_size() == 4 else torch.int16)


def quantize(shape: tuple[int, int], dtype: torch.dtype, blocksize: int = 64, nested: bool = True,
             seed: int = 0) -> tuple[torch.Tensor, object]:  # fmt: skip
    import bitsandbytes.functional as bnbf

    g = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(shape, generator=g, device="cuda").to(dtype)
    return bnbf.quantize_4bit(w, blocksize=blocksize, compress_statistics=nested, quant_type="nf4")


def check_dequantize(quick: bool) -> list[str]:
    import bitsandbytes.functional as bnbf

    from finetune_core.kernels import ops

    failures = []
    cases = [(s, d, 64, n) for s in DQ_SHAPES for d in DTYPES for n in (True, False)]
    cases += [((300, 1000), torch.bfloat16, b, True) for b in (128, 256, 4096)]
    if quick:
        cases = cases[::3]
    for shape, dtype, bs, nested in cases:
        tag = f"dequant {shape} {dtype} bs={bs} nested={nested}"
        try:
            packed, qs = quantize(shape, dtype, bs, nested)
            expected = bnbf.dequantize_4bit(packed, qs, quant_type="nf4")
            w = ops.NF4Weight.from_bnb(packed, qs)
            ours = torch.ops.tunebook.dequantize_nf4(*w.args(), dtype)
            if ours.shape != expected.shape or not torch.equal(bits(ours), bits(expected)):
                diff = (ours.float() - expected.float()).abs()
                failures.append(f"{tag}: not bitwise equal (max abs diff {diff.max().item():.3g})")
        except Exception as exc:  # noqa: BLE001 - report every case, then fail at the end
            failures.append(f"{tag}: {type(exc).__name__}: {exc}")
    # Unaligned packed pointer: the scalar kernel must agree too.
    packed, qs = quantize((64, 256), torch.bfloat16, seed=3)
    w = ops.NF4Weight.from_bnb(packed, qs)
    buf = torch.empty(packed.numel() + 1, dtype=torch.uint8, device="cuda")
    buf[1:].copy_(packed.view(torch.uint8).reshape(-1))
    args = list(w.args())
    args[0] = buf[1:]
    got = torch.ops.tunebook.dequantize_nf4(*args, torch.bfloat16)
    if not torch.equal(bits(got), bits(bnbf.dequantize_4bit(packed, qs, quant_type="nf4"))):
        failures.append("dequant unaligned packed pointer: not bitwise equal")
    log(f"dequantize: {len(cases) + 1} cases, {len(failures)} failures")
    return failures


def check_gemv(quick: bool) -> list[str]:
    import bitsandbytes as bnb

    from finetune_core.kernels import ops, reference

    failures = []
    rows_list = [*range(1, 17), 17, 64]
    shapes = GEMV_SHAPES[::2] if quick else GEMV_SHAPES
    n_cases = 0
    for shape in shapes:
        packed, qs = quantize(shape, torch.bfloat16, seed=1)
        w = ops.NF4Weight.from_bnb(packed, qs)
        w64 = reference.dequantize_nf4(*w.args(), torch.float64)
        for dtype in DTYPES:
            for rows in rows_list:
                n_cases += 1
                tag = f"gemv {shape} {dtype} rows={rows}"
                try:
                    x = torch.randn(rows, shape[1], device="cuda").to(dtype)
                    y = torch.ops.tunebook.gemv_nf4(x, *w.args())
                    ref = x.double() @ w64.t()
                    scale = ref.abs().max().item()
                    err = (y.double() - ref).abs().max().item() / scale
                    tol = TOL[dtype] * (1 if rows <= 16 else 4)
                    if y.shape != ref.shape or y.dtype != dtype or not err < tol:
                        failures.append(f"{tag}: rel err vs float64 {err:.3g} (tol {tol:.1g})")
                    theirs = bnb.matmul_4bit(x, packed, quant_state=qs)
                    err_b = (y.double() - theirs.double()).abs().max().item() / scale
                    if not err_b < BNB_TOL[dtype]:
                        failures.append(f"{tag}: rel diff vs bitsandbytes {err_b:.3g}")
                except Exception as exc:  # noqa: BLE001
                    failures.append(f"{tag}: {type(exc).__name__}: {exc}")
    log(f"gemv: {n_cases} cases, {len(failures)} failures")
    return failures


def check_linear_patch() -> list[str]:
    """A bitsandbytes Linear4bit on CUDA through our ops, forward and backward."""
    import bitsandbytes as bnb

    from finetune_core.kernels import linear

    torch.manual_seed(0)
    lin = bnb.nn.Linear4bit(576, 192, bias=True, compute_dtype=torch.bfloat16, quant_type="nf4")
    lin.weight = bnb.nn.Params4bit(torch.randn(192, 576), requires_grad=False, quant_type="nf4")
    lin.bias = torch.nn.Parameter(torch.randn(192))
    lin = lin.cuda()
    failures = []
    for rows in (1, 40):
        x0 = torch.randn(2, rows, 576, device="cuda", dtype=torch.bfloat16)

        def run(x0: torch.Tensor = x0) -> list[torch.Tensor]:
            x = x0.clone().requires_grad_(True)
            lin.bias.grad = None
            y = lin(x)
            (y.float() * torch.linspace(-1, 1, 192, device="cuda")).sum().backward()
            return [y.detach().float(), x.grad.float(), lin.bias.grad.float().clone()]

        linear.disable_linear4bit_patch()
        expected = run()
        with linear.patch_linear4bit():
            got = run()
        for name, a, b in zip(["y", "grad_x", "grad_bias"], got, expected, strict=True):
            err = ((a - b).abs().max() / b.abs().max()).item()
            if not err < 3e-2:
                failures.append(f"Linear4bit patch rows={rows} {name}: rel diff {err:.3g}")
    log(f"Linear4bit patch: {len(failures)} failures")
    return failures


# ---- timing ---------------------------------------------------------------------------------


def time_calls(fns: list[Callable[[], object]], reps: int = 5) -> tuple[float, str]:
    """Median seconds per call of fns run back to back (one call each per pass)."""
    torch.cuda.synchronize()
    for fn in fns[:3]:
        fn()
    passes = max(1, 200 // len(fns))
    mode = "graph"
    try:
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for fn in fns:  # warm-up on the side stream, as capture requires
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(graph):
            for fn in fns:
                fn()

        def run() -> None:
            for _ in range(passes):
                graph.replay()
    except Exception:  # noqa: BLE001 - bitsandbytes may not be capturable: time it eagerly
        mode = "eager"
        torch.cuda.synchronize()

        def run() -> None:
            for _ in range(passes):
                for fn in fns:
                    fn()

    run()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / (passes * len(fns)))
    return statistics.median(times), mode


def copies_for(nbytes: int, l2_bytes: int) -> int:
    return int(min(1024, max(1, -(-3 * l2_bytes // max(1, nbytes)))))


def copy_ceiling(numel: int) -> float:
    """GB/s (read + written) of a bf16 device-to-device copy of numel elements."""
    src = torch.empty(numel, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    t, _ = time_calls([lambda: dst.copy_(src)])
    return 2 * numel * 2 / t / 1e9


def bench(quick: bool) -> dict:
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    from finetune_core.kernels import ops

    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    results: dict = {}
    results["copy_ceiling_GBps"] = copy_ceiling(14336 * 4096)
    for name, (n, k) in SHAPES.items():
        packed, qs = quantize((n, k), torch.bfloat16, seed=5)
        w = ops.NF4Weight.from_bnb(packed, qs)
        numel = n * k
        count = copies_for(numel // 2, l2) if not quick else min(4, copies_for(numel // 2, l2))
        # Separate buffers with the same data, so each call misses L2 like a real forward.
        weights = []
        for _ in range(count):
            w2 = dataclasses.replace(w, packed=packed.clone(), qabsmax=w.qabsmax.clone())
            weights.append((w2, w2.packed, w2.quant_state()))
        x1 = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        x16 = torch.randn(16, k, device="cuda", dtype=torch.bfloat16)
        row: dict = {}
        cases = {
            "dequant_GBps": (
                numel / 2 + numel * 2,
                lambda wt: lambda: torch.ops.tunebook.dequantize_nf4(*wt[0].args(), torch.bfloat16),
                lambda wt: lambda: bnbf.dequantize_4bit(wt[1], wt[2], quant_type="nf4"),
            ),
            "gemv1_GBps": (
                numel / 2,
                lambda wt, x=x1: lambda: torch.ops.tunebook.gemv_nf4(x, *wt[0].args()),
                lambda wt, x=x1: lambda: bnb.matmul_4bit(x, wt[1], quant_state=wt[2]),
            ),
            "gemv16_GBps": (
                numel / 2,
                lambda wt, x=x16: lambda: torch.ops.tunebook.gemv_nf4(x, *wt[0].args()),
                lambda wt, x=x16: lambda: bnb.matmul_4bit(x, wt[1], quant_state=wt[2]),
            ),
        }
        for metric, (work, ours, theirs) in cases.items():
            t_o, m_o = time_calls([ours(wt) for wt in weights])
            t_b, m_b = time_calls([theirs(wt) for wt in weights])
            row[metric] = {
                "ours": work / t_o / 1e9,
                "bnb": work / t_b / 1e9,
                "ours_us": t_o * 1e6,
                "bnb_us": t_b * 1e6,
                "ratio": t_b / t_o,
                "mode": f"{m_o}/{m_b}",
            }
        results[name] = {"copies": count, **row}
        del weights
        torch.cuda.empty_cache()
    return results


def run_pytest(report: dict) -> list[str]:
    """The GPU tests (marked cuda): the kernels' and training's out-of-memory, in a child."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda"]
    cmd += [str(REPO / "tests/core" / name) for name in ("test_kernels_cuda.py", "test_train.py")]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    tail = (res.stdout + res.stderr).strip().splitlines()
    report["pytest_cuda"] = {"returncode": res.returncode, "summary": tail[-1] if tail else ""}
    log(f"pytest -m cuda: {report['pytest_cuda']['summary']}")
    if res.returncode != 0:
        log("\n".join(tail[-60:]))
        return [f"pytest -m cuda failed: {report['pytest_cuda']['summary']}"]
    return []


# ---- main -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-dir", type=Path, default=REPO / ".whl")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="fewer cases and copies (smoke run)")
    parser.add_argument("--no-pytest", action="store_true", help="skip the `cuda` pytest tests")
    opts = parser.parse_args()
    t0 = time.perf_counter()
    report: dict = {"torch": torch.__version__, "cuda": torch.version.cuda}
    failures: list[str] = []

    def finish(code: int) -> int:
        report["failures"] = failures
        report["seconds"] = round(time.perf_counter() - t0, 1)
        report["status"] = {0: "ok", 1: "FAILED", 2: "no GPU"}[code]
        text = json.dumps(report, indent=1, default=str)
        log("JSON " + json.dumps(report, default=str))
        if opts.json:
            opts.json.write_text(text)
        return code

    report["bitsandbytes"] = ensure_bitsandbytes(opts.wheel_dir)
    log(
        f"torch {torch.__version__} (cuda {torch.version.cuda}), bitsandbytes {report['bitsandbytes']}"
    )

    if not torch.cuda.is_available():
        log("no CUDA GPU visible to torch: running the CPU parts only (nvcc compile, CPU kernels)")
        report["nvcc_compile"] = nvcc_compile_check()
        report["cpu_bitwise"] = cpu_bitwise_check()
        for part in ("nvcc_compile", "cpu_bitwise"):
            if report[part].get("ok") is False:
                failures.append(f"{part}: {report[part]}")
        log(
            f"nvcc compile: {report['nvcc_compile'].get('ok')}, CPU bitwise: {report['cpu_bitwise']['ok']}"
        )
        log("gpu-check: NO GPU - the CUDA checks and timings did not run (exit 2)")
        return finish(1 if failures else 2)

    from finetune_core.kernels import ops

    props = torch.cuda.get_device_properties(0)
    report["gpu"] = props.name
    report["sm"] = f"{props.major}{props.minor}"
    log(f"GPU: {props.name} (sm_{props.major}{props.minor}, {props.multi_processor_count} SMs)")
    os.environ.setdefault("TUNEBOOK_VERBOSE_BUILD", "")
    t_build = time.perf_counter()
    if not ops.load_cuda_extension():
        failures.append("the CUDA extension did not build (see the warning above)")
        return finish(1)
    report["build_seconds"] = round(time.perf_counter() - t_build, 1)
    log(f"CUDA extension built/loaded in {report['build_seconds']} s")

    for check in (check_dequantize, check_gemv):
        try:
            failures += check(opts.quick)
        except Exception:  # noqa: BLE001
            failures.append(f"{check.__name__} crashed:\n{traceback.format_exc()}")
    try:
        failures += check_linear_patch()
    except Exception:  # noqa: BLE001
        failures.append(f"check_linear_patch crashed:\n{traceback.format_exc()}")
    for f in failures[:40]:
        log("MISMATCH " + f)

    try:
        with torch.inference_mode():
            report["timing"] = bench(opts.quick)
    except Exception:  # noqa: BLE001
        failures.append(f"timing crashed:\n{traceback.format_exc()}")
        return finish(1)
    timing = report["timing"]
    log(f"\n{props.name}; bf16 copy ceiling {timing['copy_ceiling_GBps']:.0f} GB/s (read+write)")
    header = f"{'shape':24} {'metric':13} {'ours GB/s':>10} {'bnb GB/s':>10} {'ours us':>9} {'bnb us':>9} {'ratio':>7}"  # noqa: E501
    log(header + "\n" + "-" * len(header))
    for name in SHAPES:
        for metric, v in timing[name].items():
            if not isinstance(v, dict):
                continue
            log(
                f"{name:24} {metric:13} {v['ours']:10.0f} {v['bnb']:10.0f} {v['ours_us']:9.1f} "
                f"{v['bnb_us']:9.1f} {v['ratio']:6.2f}x"
            )
    ffn = timing["ffn 14336x4096"]
    report["bars"] = {
        "dequant_ge_2200_GBps": ffn["dequant_GBps"]["ours"] >= 2200,
        "gemv1_ge_1500_GBps": ffn["gemv1_GBps"]["ours"] >= 1500,
    }
    log(f"bars (informational): {report['bars']}")
    if not opts.no_pytest:
        failures += run_pytest(report)
    log(f"{'PASS' if not failures else 'FAIL'}: {len(failures)} mismatches")
    return finish(1 if failures else 0)


if __name__ == "__main__":
    sys.exit(main())
