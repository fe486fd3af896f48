"""make bench-estimate: the pre-flight memory estimate against the measured peak.

Three fine-tune settings of SmolLM2-135M-Instruct (issue 22's closing figure) and one of
Gemma-3-270M, each trained
for a few steps in its own process on the bundled 2-digit additions, packed as the recipe
packs them. For each, the web's estimate (webapp.projects.estimate.formula_memory: the
figure and range a user sees before any run has been measured) beside the process's
measured peak (peak RSS on the CPU, peak CUDA memory on a GPU), the ratio, and whether the
peak fell inside the shown range. The last line is one JSON object.

    python -m benchmarks.bench_estimate [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"
GEMMA = "gemma-3-270m"
# Settings of SmolLM2 (the figure) and one of Gemma-3-270M, whose 262k vocabulary
# is what its memory follows. The formula's constants were fitted to the first two, to
# bf16 at batch 8 x 1024 and to Gemma's (2026-12-05); the others check it.
SETTINGS: dict[str, dict[str, Any]] = {
    "nf4 r8 batch1 len256": {"quantization": "nf4", "lora_r": 8, "batch_size": 1, "max_length": 256},
    "nf4 r16 batch4 len512": {"quantization": "nf4", "lora_r": 16, "batch_size": 4, "max_length": 512},
    "bf16 r16 batch4 len1024": {"quantization": "none", "lora_r": 16, "batch_size": 4, "max_length": 1024},
    "nf4 r32 batch2 len2048": {"quantization": "nf4", "lora_r": 32, "batch_size": 2, "max_length": 2048},
    "gemma nf4 r16 batch2 len512": {"base_model": GEMMA, "quantization": "nf4", "lora_r": 16, "batch_size": 2, "max_length": 512},
}  # fmt: skip


def train_one(name: str, steps: int) -> dict[str, Any]:
    """In this process: a short fine-tune with the setting; its peak memory, the training
    loop's seconds and tokens, and the seconds before the loop (loading)."""
    from finetune_core.contracts.hooks import Hooks
    from finetune_core.data import bigbench_task_path
    from finetune_core.train import TrainConfig, train
    from finetune_core.train.callbacks import peak_memory_bytes

    hp = dict(SETTINGS[name])
    model = hp.pop("base_model", MODEL)
    marks: dict[str, float] = {"process": time.perf_counter()}

    def clock(phase: str, step: int, total: int | None, event: dict[str, Any]) -> None:
        if event["kind"] == "start":
            marks["start"] = time.perf_counter()
        elif event["kind"] == "step":
            marks["end"], marks["rate"] = time.perf_counter(), float(event["tokens_per_s"])

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            model=model, data=str(bigbench_task_path("arithmetic-2_digit_addition")),
            output_dir=out, limit_examples=512, val_fraction=0.0, max_steps=steps,
            lora_alpha=2 * hp["lora_r"], save_every=10**6, eval_every=10**6, seed=0, **hp,
        )  # fmt: skip
        train(cfg, hooks=Hooks(progress=clock))
    train_s = marks["end"] - marks["start"]
    return {
        "setting": name,
        "peak_memory_bytes": peak_memory_bytes(),
        "train_s": train_s,
        "tokens": round(marks["rate"] * train_s),
        "startup_s": marks["start"] - marks["process"],
        "batch_tokens": hp["batch_size"] * hp["max_length"],
    }


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="bench-estimate-"))
    import django

    django.setup()


def estimated(
    name: str, facts: dict[str, Any], earlier: list[dict[str, Any]], tokens: int
) -> dict[str, Any]:
    """What the web would show before this run: from the earlier runs of the same model
    when there are any (webapp.projects.throughput's figures), else the catalog's CPU rate
    and the formula."""
    from webapp.projects.estimate import (
        CATALOG_SLOWER,
        FORMULA_RANGE,
        catalog_seconds,
        formula_at,
        formula_memory,
    )
    from webapp.projects.throughput import Figures
    from workers.catalog import DEFAULT_TOKENS_PER_S

    hp, row = SETTINGS[name], earlier[-1] if earlier else None
    config = {"base_model": hp.get("base_model", MODEL), **hp}
    memory = formula_memory(config, facts=facts)
    low, high = (int(memory * share) for share in FORMULA_RANGE)
    out = {"memory": memory, "memory_low": low, "memory_high": high}
    if row is None:
        seconds = catalog_seconds(tokens, DEFAULT_TOKENS_PER_S[config["base_model"]])
        return out | {
            "seconds": seconds,
            "seconds_low": seconds,
            "seconds_high": seconds * CATALOG_SLOWER,
            "basis": "formula",
        }
    figures = Figures(lane="gpu", device="cpu", runs=tuple(earlier))
    time_range = figures.seconds(tokens, hp["batch_size"] * hp["max_length"])
    mem = figures.memory(hp["batch_size"] * hp["max_length"], formula_at(config, facts))
    if mem is not None:
        out = {"memory": int(mem.value), "memory_low": int(mem.low), "memory_high": int(mem.high)}
    return out | {
        "seconds": time_range.value, "seconds_low": time_range.low, "seconds_high": time_range.high,
        "basis": f"{len(earlier)} earlier run(s)",
    }  # fmt: skip


def _within(value: float, low: float, high: float) -> str:
    return "yes" if low <= value <= high else "NO"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--one", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    p.add_argument("--only", nargs="*", choices=sorted(SETTINGS), help="these settings alone")
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(train_one(args.one, args.steps)))
        return
    from finetune_core.models.catalog import describe
    from finetune_core.models.registry import BUILTIN

    sizes = ("parameters", "vocab_size", "layers", "hidden_size")
    facts = {m: {k: describe(BUILTIN[m])[k] for k in sizes} for m in (MODEL, GEMMA)}
    _django()
    # The product keeps measured runs per model and quantization (throughput.figures_for).
    earlier: dict[tuple[str, str], list[dict[str, Any]]] = {}
    rows = []
    print(f"{'setting':28} {'basis':16} {'memory est (range)':>24} {'peak':>8} {'ok':>4} "
          f"{'time est (range)':>20} {'took':>7} {'ok':>4}")  # fmt: skip
    for name in args.only or SETTINGS:
        model = SETTINGS[name].get("base_model", MODEL)
        runs = earlier.setdefault((model, SETTINGS[name]["quantization"]), [])
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.bench_estimate",
            "--one",
            name,
            "--steps",
            str(args.steps),
        ]
        done = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
        got = json.loads(done.stdout.strip().splitlines()[-1])
        est = estimated(name, facts[model], runs, got["tokens"])
        took, peak = got["startup_s"] + got["train_s"], got["peak_memory_bytes"]
        row = {
            "setting": name,
            **est,
            "peak": peak,
            "took_s": round(took, 1),
            "tokens": got["tokens"],
        }
        row["memory_ratio"] = round(peak / est["memory"], 2)
        row["time_ratio"] = round(took / est["seconds"], 2)
        rows.append(row)
        mib = 2**20
        print(
            f"{name:28} {est['basis']:16} {est['memory'] / mib:6.0f} ({est['memory_low'] / mib:.0f}-"
            f"{est['memory_high'] / mib:.0f}) MiB {peak / mib:6.0f}Mi "
            f"{_within(peak, est['memory_low'], est['memory_high']):>4} "
            f"{est['seconds']:5.0f} ({est['seconds_low']:.0f}-{est['seconds_high']:.0f}) s "
            f"{took:6.0f}s {_within(took, est['seconds_low'], est['seconds_high']):>4}"
        )
        sample = {k: got[k] for k in ("tokens", "train_s", "startup_s", "batch_tokens")}
        runs.append(sample | {"peak_bytes": peak})
    print(json.dumps({"steps": args.steps, "rows": rows}))


if __name__ == "__main__":
    main()
