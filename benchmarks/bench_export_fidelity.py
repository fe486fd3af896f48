"""make bench-export: how far a merged 16-bit export is from a real QLoRA adapter as trained.

Per model: a short QLoRA fine-tune (NF4 base, LoRA r=8) on the bundled 2-digit additions,
then `export_run(..., fmt="merged")`, which merges the adapter into the 16-bit base and
measures (finetune_core/export/fidelity.py) the mean KL divergence of next-token
distributions and greedy agreement on N prompts between the NF4 base + adapter (as trained)
and the merged model. Then where the gap comes from, on the same prompts: the NF4 rounding of
the base alone (NF4 base vs 16-bit base, no adapter) and the merge alone (16-bit base + the
unmerged adapter vs the merged export). A table, then one JSON line; --out writes the JSON
too. A measurement, not a test.

    python -m benchmarks.bench_export_fidelity [--model NAME ...] [--steps 40] [--prompts 50]
        [--type bf16] [--work-dir DIR] [--out benchmarks/results/export_fidelity.json]

Figures: benchmarks/results/export.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.work_dir import in_work_dir
from finetune_core.export.fidelity import AGREEMENT_WARN, KL_WARN

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
TASK = "arithmetic-2_digit_addition"


def qlora_run(folder: Path, model: str, steps: int) -> dict[str, Any]:
    """Train (or, with --work-dir, reuse) a finished NF4 LoRA run; its first and last losses."""
    from finetune_core.contracts.hooks import Hooks
    from finetune_core.data import bigbench_task_path
    from finetune_core.train import TrainConfig, train

    run = folder / f"{model}-nf4-r8-{steps}"
    facts_file = run / "bench_train.json"
    if facts_file.is_file():
        return json.loads(facts_file.read_text())
    losses: list[float] = []

    def on_step(phase: str, step: int, total: int | None, event: dict[str, Any]) -> None:
        if event["kind"] == "step" and event.get("train_loss") is not None:
            losses.append(float(event["train_loss"]))

    # The CLI's `train --quantization nf4 --lora-r 8 ...` with these flags; a learning rate
    # high enough that 40 steps move the adapter well away from its zero start.
    cfg = TrainConfig(
        model=model, data=str(bigbench_task_path(TASK)), output_dir=str(run),
        limit_examples=1024, val_fraction=0.0, quantization="nf4", lora_r=8, lora_alpha=16,
        batch_size=4, max_length=128, max_steps=steps, learning_rate=1e-3, warmup_ratio=0.0,
        save_every=10**6, eval_every=10**6, seed=0,
    )  # fmt: skip
    start = time.perf_counter()
    result = train(cfg, hooks=Hooks(progress=on_step))
    assert result.status == "succeeded", result.status
    facts = {
        "run": str(run),
        "steps": result.steps,
        "train_s": round(time.perf_counter() - start, 1),
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
    }
    facts_file.write_text(json.dumps(facts))
    return facts


def mean_kl(p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor) -> float:
    """KL(p || q) in nats, averaged over the real (unpadded) prompt positions."""
    return round(float((p.exp() * (p - q)).sum(-1)[mask.bool()].mean()), 6)


@torch.no_grad()
def log_probs(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)


def gap_sources(run: Path, merged: Path, prompts: int) -> dict[str, float]:
    """The two parts of the as-trained vs merged gap, each on the fidelity prompts: the
    base's NF4 rounding (no adapter) and the merge itself (adapter unmerged vs merged)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune_core.export.common import finished_run
    from finetune_core.export.fidelity import fidelity_prompts
    from finetune_core.export.merged import run_tokenizer
    from finetune_core.infer.generate import left_pad
    from finetune_core.models.loading import load_model
    from finetune_core.models.prepare import prepare

    source = finished_run(run)
    tokenizer = run_tokenizer(source)
    ids, mask = left_pad(fidelity_prompts(tokenizer, prompts), tokenizer.pad_token_id)

    def full() -> torch.nn.Module:
        folder = prepare(source.base_model)
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    base16 = log_probs(full(), ids, mask)
    nf4 = load_model(source.base_model, quantization="nf4", compute_dtype=torch.float32)
    base4 = log_probs(nf4.eval(), ids, mask)
    unmerged = log_probs(PeftModel.from_pretrained(full(), source.adapter).eval(), ids, mask)
    done = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    return {
        "kl_nf4_base_vs_16bit_base": mean_kl(base4, base16, mask),
        "kl_unmerged_vs_merged": mean_kl(unmerged, log_probs(done, ids, mask), mask),
        "kl_adapter_effect_16bit": mean_kl(base16, unmerged, mask),
    }


def measure(folder: Path, model: str, steps: int, prompts: int, type_: str) -> dict[str, Any]:
    from finetune_core.export import export_run

    trained = qlora_run(folder, model, steps)
    out = Path(trained["run"]) / "exports" / f"merged-{type_}-fidelity"
    made = export_run(trained["run"], fmt="merged", type_=type_, out=out, n_prompts=prompts)
    return {
        "model": model,
        "train": trained,
        "merged_type": type_,
        "export_s": made["seconds"],
        "fidelity": made["fidelity"],
        "warnings": made["warnings"],
        "gap_sources": gap_sources(Path(trained["run"]), out, prompts),
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| model | loss (first -> last) | mean KL (nats/token) | max KL | greedy token "
        "agreement | identical answers | manifest warns | KL, NF4 base alone | KL, merge "
        "alone |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f, t, g = r["fidelity"], r["train"], r["gap_sources"]
        rows.append(
            f"| {r['model']} | {t['first_loss']:.3f} -> {t['last_loss']:.3f} | "
            f"{f['mean_kl']:.5f} | {f['max_kl']:.4f} | {f['greedy_token_agreement']:.1%} | "
            f"{f['greedy_identical_answers']:.0%} | {'yes' if r['warnings'] else 'no'} | "
            f"{g['kl_nf4_base_vs_16bit_base']:.4f} | {g['kl_unmerged_vs_merged']:.5f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--type", dest="type_", default="bf16", choices=("bf16", "f16"))
    parser.add_argument("--work-dir", help="keep the runs here (a rerun reuses them)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    models = args.model or list(MODELS)
    started = time.perf_counter()
    results = in_work_dir(
        args.work_dir,
        lambda folder: [measure(folder, m, args.steps, args.prompts, args.type_) for m in models],
    )
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "task": TASK,
        "kl_warn": KL_WARN,
        "agreement_warn": AGREEMENT_WARN,
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    print(table(results))
    for r in results:
        for warning in r["warnings"]:
            print(f"  {r['model']}: warning: {warning}")
    print(json.dumps(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
