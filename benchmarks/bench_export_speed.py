"""Exports and generation speed on this CPU, per model: the time and file size of each
GGUF type (f16, q8_0, q4_0), then llama.cpp on the exported q8_0 GGUF (tools/llama)
against Tunebook's own generation (finetune_core.infer: the merged folder, unquantized,
and the base in NF4 + the adapter, as the playground serves it). A measurement, not a test.

    python -m benchmarks.bench_export_speed [RUN ...] [--model NAME ...] [--tokens 32]
        [--threads 1] [--out benchmarks/results/export.json]

--model makes a run of that base with a small seeded LoRA (what tests/core/
test_export_llamacpp.py exports), so no fine-tune is needed. Figures: benchmarks/results/
export.md. Earlier (SmolLM2-135M + a LoRA, 32 tokens x 3 prompts, one thread each, load
~2.5): llama.cpp q8_0 31.7 tokens/s; ours 16.2 (merged, fp32) and 16.7 (NF4 + adapter).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from finetune_core.contracts.layout import EXPORT_TYPES
from finetune_core.export import export_run
from finetune_core.infer import generate, load_chat_model
from finetune_core.models import load_tokenizer, prepare

LLAMA = Path(__file__).resolve().parents[1] / "tools" / "llama"
PROMPTS = ["Tell me about the moon.", "Write a short story about a robot.", "Explain rain."]


def llama_cpp_speed(gguf_file: Path, texts: list[str], tokens: int, threads: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(texts, f)
        f.flush()
        done = subprocess.run(
            ["node", str(LLAMA / "greedy.mjs"), str(gguf_file), f.name, str(tokens)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "LLAMA_THREADS": str(threads)},
        )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_second"]


def ours_speed(model: str, adapter: str | None, quantization: str, tokens: int) -> float:
    chat = load_chat_model(model, adapter=adapter, quantization=quantization)
    start = time.perf_counter()
    results = generate(
        chat, [[{"role": "user", "content": p}] for p in PROMPTS], max_new_tokens=tokens
    )
    made = sum(len(chat.tokenizer(r.text, add_special_tokens=False)["input_ids"]) for r in results)
    return made / (time.perf_counter() - start)


def seeded_run(folder: Path, model_name: str) -> Path:
    """A finished run folder: manifest + a seeded LoRA adapter on every linear layer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(prepare(model_name), dtype=torch.float32)
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)  # a nudge, not a new model: answers stay fluent
    model.save_pretrained(folder / "adapter")
    load_tokenizer(model_name).save_pretrained(folder / "adapter")
    manifest = {
        "base_model": model_name, "method": "lora", "hyperparameters": {"quantization": "nf4"},
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def gguf_exports(run: Path) -> dict[str, dict[str, Any]]:
    """Each GGUF type's export time and file size."""
    figures = {}
    for type_ in EXPORT_TYPES["gguf"]:
        made = export_run(run, fmt="gguf", type_=type_, out=run / "exports" / f"gguf-{type_}")
        size = next(f["bytes"] for f in made["files"] if f["name"] == made["gguf_file"])
        figures[type_] = {"seconds": made["seconds"], "mib": round(size / 2**20, 1)}
    return figures


def speeds(run: Path, tokens: int, threads: int) -> dict[str, float]:
    q8 = Path(run) / "exports" / "gguf-q8_0"
    merged = export_run(run, fmt="merged", type_="f16", out=run / "exports" / "merged-f16",
                        measure=False)  # fmt: skip
    chat = load_chat_model(merged["folder"], quantization="none")
    texts = [
        chat.tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in PROMPTS
    ]
    base = json.loads((run / "manifest.json").read_text())["base_model"]
    figures = {
        "llama_cpp_q8_0": llama_cpp_speed(next(q8.glob("*.gguf")), texts, tokens, threads),
        "ours_merged_unquantized": ours_speed(merged["folder"], None, "none", tokens),
        "ours_nf4_plus_adapter": ours_speed(base, str(run / "adapter"), "nf4", tokens),
    }
    return {k: round(v, 2) for k, v in figures.items()}


def measure(run: Path, tokens: int, threads: int) -> dict[str, Any]:
    base = json.loads((run / "manifest.json").read_text())["base_model"]
    return {
        "model": base,
        "gguf": gguf_exports(run),
        "tokens_per_second": speeds(run, tokens, threads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runs = list(args.runs) + [seeded_run(Path(scratch) / name, name) for name in args.model]
        results = [measure(run, args.tokens, args.threads) for run in runs]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "threads": args.threads,
        "tokens": args.tokens,
        "prompts": len(PROMPTS),
        "results": results,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
