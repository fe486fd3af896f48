"""make bench-train: our QLoRA training against the best the stock tools do, in one run.

Five configurations train the same 4-bit model with the same LoRA (r=16, alpha 32,
all linear layers), examples, loss masks (assistant tokens only), optimizer (AdamW,
lr 2e-4, cosine, no warm-up, clip 1.0), steps and tokens per step:

1. stock_padding: transformers' Trainer, a padding collator (one example per row);
2. stock_flattening: Trainer with DataCollatorWithFlattening (padding-free packing);
3. trl_packing: TRL's SFTTrainer, packing=True (best-fit decreasing, padding-free);
4. ours: finetune_core.train.train, as the product runs it (gradient checkpointing auto:
   off where the activations fit; the stock ones keep it on, as peft's k-bit
   preparation sets it);
5. ours_checkpointed: ours with gradient checkpointing on, the memory-lean trade.

The packed configurations (3-5) take `--batch-size` rows of up to `--max-length`
tokens per step; the unpacked ones (1, 2) take as many examples per step as our
packing puts into that many rows, so every step holds about the same tokens.
Each configuration runs in its own process, so each peak RSS is its own.

Prints a table, the ratios against the best stock configuration (by useful tokens/s)
and, as the last line, one JSON object, also written to --out.

    python -m benchmarks.bench_train [--model smollm2-135m-instruct|gemma-3-270m]
        [--steps 24] [--batch-size 4] [--max-length 512] [--examples 256] [--threads N]

On a shared, loaded machine pass --threads 1: two-thread OpenMP regions that wait on
each other under CPU contention made one SmolLM2 forward pass 60x slower.

Useful tokens are the real (non-padding) tokens the model is fed; the final loss is
the mean training loss of the last quarter of the steps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.train_configs import CONFIGS, OURS, run, train_config

RESULTS = Path(__file__).parent / "results"
STOCK = tuple(c for c in CONFIGS if c not in OURS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--task", default="sports_understanding", help="a bundled BIG-bench task")
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--steps", type=int, default=24, help="optimizer steps per configuration")
    p.add_argument("--batch-size", type=int, default=4, help="packed rows per step")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--only", choices=CONFIGS, nargs="+", default=list(CONFIGS))
    p.add_argument("--out", type=Path, help="where the JSON goes (default: benchmarks/results)")
    p.add_argument(
        "--stock-nf4",
        choices=("bitsandbytes", "ours"),
        default="bitsandbytes",
        help="the NF4 matmul the stock configurations run (default: bitsandbytes' own)",
    )
    p.add_argument(
        "--threads", type=int, help="CPU threads per configuration (default: torch's choice)"
    )
    p.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    p.add_argument("--stock-batch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for flag in ("examples", "steps", "batch_size", "max_length", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    return args


def stock_batch(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Examples per step for the unpacked configurations: what `batch_size` packed rows hold."""
    from finetune_core.models import load_tokenizer
    from finetune_core.train.setup import prepare_rows

    with tempfile.TemporaryDirectory() as out:
        cfg = train_config(args, out)
        rows, _, info = prepare_rows(cfg, load_tokenizer(cfg.model))
    examples = sum(len(r.lines) for r in rows)
    per_step = max(1, round(args.batch_size * examples / len(rows)))
    facts = {"examples": examples, "packed_rows": len(rows), "tokens": info["train_tokens"]}
    return per_step, facts


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter and read back its RESULT line."""
    cmd = [sys.executable, "-m", "benchmarks.bench_train", "--child", name,
           "--model", args.model, "--task", args.task, "--examples", str(args.examples),
           "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--max-length", str(args.max_length), "--stock-batch", str(args.stock_batch)]  # fmt: skip
    env = dict(os.environ)
    if args.threads:  # torch's pool and the OpenMP of our kernels alike
        env["OMP_NUM_THREADS"] = str(args.threads)
    if name not in OURS and args.stock_nf4 == "bitsandbytes":
        env["TUNEBOOK_NF4_BACKEND"] = "bitsandbytes"
    print(f"{name}: training...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    print(f"{name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return summarise(json.loads(line[len("RESULT ") :]))


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    tail = r["losses"][-max(1, len(r["losses"]) // 4) :]
    return r | {
        "useful_tokens_per_s": r["tokens"] / r["seconds"],
        "tokens_per_step": r["tokens"] / max(r["steps"], 1),
        "final_loss": sum(tail) / len(tail),
    }


def ratios(
    results: dict[str, dict[str, Any]], ours: str = "ours"
) -> tuple[str | None, dict[str, float] | None]:
    """`ours` against the stock configuration with the most useful tokens/s."""
    stock = [results[c] for c in STOCK if c in results]
    if not stock or ours not in results:
        return None, None
    best = max(stock, key=lambda r: r["useful_tokens_per_s"])
    mine = results[ours]
    return best["config"], {
        "useful_tokens_per_s": mine["useful_tokens_per_s"] / best["useful_tokens_per_s"],
        "peak_memory": mine["peak_memory_bytes"] / best["peak_memory_bytes"],
        "final_loss": mine["final_loss"] / best["final_loss"],
        "wall_time": mine["seconds"] / best["seconds"],
    }


def print_table(args: argparse.Namespace, facts: dict, results: dict[str, dict]) -> None:
    print(f"model {args.model}, task {args.task}, {facts['examples']} examples "
          f"({facts['packed_rows']} packed rows of <= {args.max_length}), {args.steps} steps; "
          f"per step: {args.batch_size} packed rows or {args.stock_batch} examples; "
          f"stock NF4 matmul: {args.stock_nf4}; threads: {args.threads or 'default'}")  # fmt: skip
    print(f"{'config':17} {'useful tok/s':>12} {'tok/step':>9} {'seconds':>8} {'steps':>5} "
          f"{'peak RSS MiB':>12} {'final loss':>10}")  # fmt: skip
    for r in results.values():
        print(f"{r['config']:17} {r['useful_tokens_per_s']:12.1f} {r['tokens_per_step']:9.0f} "
              f"{r['seconds']:8.1f} {r['steps']:5d} {r['peak_memory_bytes'] / 2**20:12.0f} "
              f"{r['final_loss']:10.4f}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run(args.child, args)))
        return
    args.stock_batch, facts = stock_batch(args)
    results = {name: run_child(name, args) for name in args.only}
    best, ratio = ratios(results)
    checkpointed = ratios(results, "ours_checkpointed")[1]
    print_table(args, facts, results)
    for name, r in (("ours", ratio), ("ours_checkpointed", checkpointed)):
        if r:
            print(
                f"{name} / best stock ({best}): " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items())
            )
    config = {k: v for k, v in vars(args).items() if k not in ("child", "only", "out")}
    report = {"benchmark": "train", "date": datetime.datetime.now(datetime.UTC).isoformat(),
              "config": config | {"data": facts}, "best_stock": best,
              "ratio_vs_best_stock": ratio, "checkpointed_vs_best_stock": checkpointed,
              "results": results}  # fmt: skip
    out = args.out or RESULTS / f"bench_train_{datetime.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
