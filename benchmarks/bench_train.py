"""make bench-train: our QLoRA path against the stock Hugging Face path, side by side.

Both paths train the same 4-bit SmolLM2-135M with the same LoRA (rank, alpha,
targets), data (BIG-bench examples with the same chat-template rendering and
loss masks), batch size, maximum length and learning rate, for one epoch.
The stock path is transformers' Trainer with a padding collator (no packing);
ours packs examples into rows with attention kept per example. Each path runs
in its own process so peak memory is its own. Prints a table, the ratios
ours/stock and one JSON line.

    python -m benchmarks.bench_train [--examples 96] [--batch-size 4] [--max-length 512]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

MODEL = "smollm2-135m-instruct"
TASK = "sports_understanding"


def _config(args: argparse.Namespace, out: str) -> Any:
    from finetune_core.data import bigbench_task_path
    from finetune_core.train import TrainConfig

    return TrainConfig(
        model=MODEL, data=str(bigbench_task_path(TASK)), output_dir=out,
        limit_examples=args.examples, val_fraction=0.0, batch_size=args.batch_size,
        max_length=args.max_length, epochs=1, learning_rate=2e-4, lora_r=16, lora_alpha=32,
        warmup_ratio=0.0, save_every=10**6, eval_every=10**6, seed=0,
    )  # fmt: skip


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from finetune_core.models import load_tokenizer
    from finetune_core.train import train
    from finetune_core.train.callbacks import peak_memory_bytes
    from finetune_core.train.setup import prepare_rows

    with tempfile.TemporaryDirectory() as out:
        cfg = _config(args, out)
        rows, _, _ = prepare_rows(cfg, load_tokenizer(cfg.model))
        useful = sum(len(r) for r in rows)
        marks: dict[str, float] = {}

        def clock(event: Any) -> None:
            # Time the step loop only, as the stock side times trainer.train().
            if event.kind == "start":
                marks["start"] = time.perf_counter()
            elif event.kind == "step":
                marks["end"] = time.perf_counter()

        result = train(cfg, callback=clock)
        seconds = marks["end"] - marks["start"]
    return {"path": "ours", "seconds": seconds, "useful_tokens": useful, "steps": result.steps,
            "rows": len(rows), "padded_tokens": 0, "peak_memory_bytes": peak_memory_bytes(),
            "final_loss": result.train_loss}  # fmt: skip


def run_stock(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from finetune_core.data import read_examples
    from finetune_core.data.render import render_example
    from finetune_core.models import load_tokenizer
    from finetune_core.train.callbacks import peak_memory_bytes
    from finetune_core.train.setup import build_model

    with tempfile.TemporaryDirectory() as out:
        cfg = _config(args, out)
        tok = load_tokenizer(cfg.model)
        examples = list(read_examples(cfg.data))[: cfg.limit_examples]
        data = []
        for ex in examples:
            r = render_example(tok, ex)
            ids, labels = r.input_ids[: cfg.max_length], r.labels[: cfg.max_length]
            data.append({"input_ids": ids, "labels": labels, "attention_mask": [1] * len(ids)})
        useful = sum(len(d["input_ids"]) for d in data)
        model = build_model(cfg)  # the same 4-bit base + LoRA as ours
        collator = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
        padded = sum(
            len(b["input_ids"][0]) * len(b["input_ids"])
            for b in (
                collator(data[i : i + cfg.batch_size]) for i in range(0, len(data), cfg.batch_size)
            )
        )
        targs = TrainingArguments(
            output_dir=out, per_device_train_batch_size=cfg.batch_size, num_train_epochs=1,
            learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=0,
            max_grad_norm=cfg.grad_clip, logging_steps=10**6, save_strategy="no", report_to=[],
            seed=0, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
            remove_unused_columns=False,
        )  # fmt: skip
        trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=collator)
        start = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - start
    return {"path": "stock", "seconds": seconds, "useful_tokens": useful, "steps": output.global_step,
            "rows": len(data), "padded_tokens": padded - useful, "peak_memory_bytes": peak_memory_bytes(),
            "final_loss": output.training_loss}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--examples", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--only", choices=["ours", "stock"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        result = run_ours(args) if args.only == "ours" else run_stock(args)
        print("RESULT " + json.dumps(result))
        return
    results = {}
    for path in ("stock", "ours"):
        cmd = [sys.executable, "-m", "benchmarks.bench_train", "--only", path, "--examples", str(args.examples),
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{path} run failed:\n{done.stderr[-3000:]}")
        results[path] = json.loads(line[len("RESULT ") :])
        results[path]["useful_tokens_per_s"] = (
            results[path]["useful_tokens"] / results[path]["seconds"]
        )
    ours, stock = results["ours"], results["stock"]
    ratios = {
        "useful_tokens_per_s": ours["useful_tokens_per_s"] / stock["useful_tokens_per_s"],
        "peak_memory": ours["peak_memory_bytes"] / stock["peak_memory_bytes"],
        "wall_time": ours["seconds"] / stock["seconds"],
    }
    print(
        f"model {MODEL}, task {TASK}, {args.examples} examples, batch {args.batch_size}, max_length {args.max_length}"
    )
    print(
        f"{'path':6} {'useful tok/s':>13} {'seconds':>8} {'steps':>6} {'pad tokens':>11} {'peak MiB':>9} {'loss':>7}"
    )
    for r in (stock, ours):
        print(f"{r['path']:6} {r['useful_tokens_per_s']:13.1f} {r['seconds']:8.1f} {r['steps']:6d} "
              f"{r['padded_tokens']:11d} {r['peak_memory_bytes'] / 2**20:9.0f} {r['final_loss']:7.3f}")  # fmt: skip
    print("ratios ours/stock: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    print(json.dumps({"benchmark": "train", "config": vars(args) | {"model": MODEL, "task": TASK},
                      "results": results, "ratios": ratios}))  # fmt: skip


if __name__ == "__main__":
    main()
