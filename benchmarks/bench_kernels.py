"""NF4 kernels (csrc/) vs bitsandbytes on CPU: dequantize, GEMV (batches), matmul (4096 tokens).

    make bench-kernels        # or: python -m benchmarks.bench_kernels [--repeat 5] [--json out.json]

Weights are bf16 quantized by bitsandbytes (nf4, blocksize 64, double-quantized absmax).
dequantize GB/s counts packed nibbles read + bf16 written; GEMV GB/s counts packed weight read
(bnb = matmul_4bit on the stored layout, as in training; "vs_bnb_packed" = bitsandbytes' CPU
inference layout, which Linear4bit switches to when not training on AVX512-BF16 CPUs);
matmul reports TFLOP/s (2*M*N*K). Ours and bitsandbytes are timed in alternation, sample by
sample (each sample a loop of calls lasting about 2 ms), so load drift on a shared machine hits
both; the table shows the ratio of medians and of bests, JSON has all. --threads 1 compares the
kernels without parallel-region stalls (on an oversubscribed box those dominate both sides).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from collections.abc import Callable

import torch

SHAPES = {
    "ffn-14336x4096": (14336, 4096),
    "smollm2-q/o 576x576": (576, 576),
    "smollm2-up 1536x576": (1536, 576),
    "smollm2-down 576x1536": (576, 1536),
    "smollm2-kv 192x576": (192, 576),
    "smollm2-lm_head 49152x576": (49152, 576),
}
TOKENS = 4096


def timeit_pair(
    ours: Callable[[], object], theirs: Callable[[], object], repeat: int, budget_s: float = 6.0
) -> tuple[tuple[float, float], tuple[float, float]]:
    """((best, median), (best, median)) seconds per call of ours and theirs, timed alternately."""

    def calls_for(fn: Callable[[], object]) -> int:
        t0 = time.perf_counter()
        fn()
        return max(1, min(1000, int(2e-3 / max(time.perf_counter() - t0, 1e-7))))

    n_o, n_t = calls_for(ours), calls_for(theirs)  # also the warm-up
    samples: tuple[list[float], list[float]] = ([], [])
    start = time.perf_counter()
    while len(samples[0]) < repeat and (
        len(samples[0]) < 3 or time.perf_counter() - start < budget_s
    ):
        for fn, n, out in ((ours, n_o, samples[0]), (theirs, n_t, samples[1])):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            out.append((time.perf_counter() - t0) / n)
    return (
        (min(samples[0]), statistics.median(samples[0])),
        (min(samples[1]), statistics.median(samples[1])),
    )


def _bnb_inference_weight(packed: torch.Tensor, qs: object) -> tuple | None:
    """bitsandbytes' AVX512-BF16 CPU inference layout of the weight, where this CPU has it."""
    import copy

    import bitsandbytes.functional as bnbf

    convert = getattr(bnbf, "_convert_weight_packed_for_cpu", None)
    if convert is None or not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return None
    try:
        return convert(packed.clone(), copy.deepcopy(qs))
    except Exception:  # noqa: BLE001 - a private API: no baseline rather than no benchmark
        return None


def bench_shape(n: int, k: int, repeat: int, matmul: bool, batches: tuple[int, ...] = (1,)) -> dict:
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    from finetune_core.kernels import NF4Weight

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(n, k, generator=g).to(torch.bfloat16)
    packed, qs = bnbf.quantize_4bit(
        weight, blocksize=64, compress_statistics=True, quant_type="nf4"
    )
    w = NF4Weight.from_bnb(packed, qs)
    args = w.args()
    numel = n * k
    xs = {m: torch.randn(m, k, generator=g).to(torch.bfloat16) for m in batches}
    xm = torch.randn(TOKENS, k, generator=g).to(torch.bfloat16)
    cases: dict[str, tuple[float, Callable[[], object], Callable[[], object]]] = {
        "dequant_GBps": (
            numel / 2 + numel * 2,
            lambda: torch.ops.tunebook.dequantize_nf4(*args, torch.bfloat16),
            lambda: bnbf.dequantize_4bit(packed, qs, quant_type="nf4"),
        ),
    }
    packed_cpu = _bnb_inference_weight(packed, qs)
    for m, x in xs.items():
        ours = functools.partial(torch.ops.tunebook.gemv_nf4, x, *args)
        # "gemv{m}": matmul_4bit on the stored layout (what training runs).
        cases[f"gemv{m}_GBps"] = (
            numel / 2,
            ours,
            functools.partial(bnb.matmul_4bit, x, packed, quant_state=qs),
        )
        if packed_cpu is not None:
            # bitsandbytes' own inference layout (Linear4bit repacks to it on AVX512-BF16 CPUs
            # when not training): the fastest stock GEMV, the honest baseline for generation.
            cases[f"gemv{m}_vs_bnb_packed_GBps"] = (
                numel / 2,
                ours,
                functools.partial(bnb.matmul_4bit, x, packed_cpu[0], quant_state=packed_cpu[1]),
            )
    if matmul:
        cases["matmul4096_TFLOPs"] = (
            2 * TOKENS * n * k / 1e3,  # so that /1e9 below gives TFLOP/s
            lambda: torch.ops.tunebook.gemv_nf4(xm, *args),
            lambda: bnb.matmul_4bit(xm, packed, quant_state=qs),
        )
    row = {}
    with torch.no_grad():
        for metric, (work, ours, theirs) in cases.items():
            reps = repeat if metric != "matmul4096_TFLOPs" else max(2, repeat // 3)
            (ob, om), (bb, bm) = timeit_pair(ours, theirs, reps)
            row[metric] = {
                "ours": work / ob / 1e9,
                "bnb": work / bb / 1e9,
                "ours_median": work / om / 1e9,
                "bnb_median": work / bm / 1e9,
            }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-matmul", action="store_true", help="skip the 4096-token matmuls")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--batches", default="1,4,8,16", help="comma-separated GEMV batch sizes")
    parser.add_argument("--shapes", help="comma-separated subset of shape names (substring match)")
    opts = parser.parse_args()

    from finetune_core.kernels import load_extension

    if opts.threads:
        torch.set_num_threads(opts.threads)

    if not load_extension():
        raise SystemExit("the NF4 kernels did not build; nothing to benchmark")
    results = {
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg_1min": os.getloadavg()[0],
        "shapes": {},
    }
    print(
        f"threads={results['threads']} isa={results['cpu_capability']} "
        f"load average {results['loadavg_1min']:.1f}"
    )
    header = (
        f"{'shape':28} {'metric':26} {'ours med':>9} {'bnb med':>9} {'ratio med':>9} {'best':>7}"
    )
    print(header + "\n" + "-" * len(header))
    wanted = [w.strip() for w in (opts.shapes or "").split(",") if w.strip()]
    for name, (n, k) in SHAPES.items():
        if wanted and not any(w in name for w in wanted):
            continue
        batches = tuple(int(b) for b in opts.batches.split(",") if b.strip())
        row = bench_shape(n, k, opts.repeat, matmul=not opts.no_matmul, batches=batches)
        results["shapes"][name] = row
        for metric, v in row.items():
            v["ratio"] = v["ours"] / v["bnb"]
            v["ratio_median"] = v["ours_median"] / v["bnb_median"]
            print(
                f"{name:28} {metric:26} {v['ours_median']:9.3f} {v['bnb_median']:9.3f} "
                f"{v['ratio_median']:8.2f}x {v['ratio']:6.2f}x"
            )
    print(json.dumps(results, indent=1))
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
