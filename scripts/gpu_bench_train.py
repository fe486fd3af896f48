"""make gpu-bench-train (issue 26, GPU half): QLoRA training speed and memory on random-initialised
models of real shapes, the stock path against ours and against each of our levers alone, in one run.

    python scripts/gpu_bench_train.py [--json out.json] [--wheel-dir .whl] [--budget-s 420] [--quick]

Shapes (random weights, nothing downloaded): SmolLM2-135M's config, Llama-3.2-1B's and
Llama-3.1-8B's. Batch 4 x 2048 random tokens, every position trained, LoRA r=16 (alpha 32,
dropout 0.05, the product's default) on every linear layer of the decoder, NF4 with double quantization, bf16 compute, sdpa attention,
the same seed (so the same weights and tokens) for every configuration of a shape.

Configurations, each in a process of its own (its own peak memory; an OOM ends only it):
  stock        bitsandbytes Linear4bit, the model's own loss (full logits), gradient
               checkpointing, paged 8-bit AdamW (AdamW on a CPU): transformers + peft + bnb.
  ours         our NF4 kernels + the recipe's loss (the output layer chunk by chunk, never the
               full logits) + the adapter's dropout fused into lora_A, gradient checkpointing.
  ours_no_ckpt the same without gradient checkpointing.
  +kernels, +chunked_ce, +no_ckpt, +compile, +fused_dropout: stock with one lever (torch.compile:
               each decoder layer).

Reported per configuration: useful tokens/s (trained tokens), step time, peak memory (GPU:
torch.cuda.max_memory_allocated while training, weights included, but not the paged optimizer's
state, which lives in CUDA managed memory the allocator does not count, alike in every
configuration and small for r=16; CPU: the process's peak RSS),
the first and last loss (the same first loss across configurations checks that each computes the
same thing). Ratios against stock per shape; the last line printed is one JSON object, and --json
is rewritten after every configuration, so a run stopped from outside keeps what it measured.
--budget-s counts from the start (the kernel build included): configurations run in order of
importance, none starts after it, and one still running 60 s past it is stopped. A kernel
configuration whose kernels did not load is an error, never stock measured under our name.

--quick: a tiny Llama shape and a few steps, for a CPU check of the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("FINETUNE_CORE_CACHE", str(REPO / ".cache"))  # gpu_check's build cache

from scripts.gpu_check import ensure_bitsandbytes  # noqa: E402

LLAMA3 = {"vocab_size": 128256, "rope_theta": 500000.0, "max_position_embeddings": 131072}
SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                     "tie_word_embeddings": True, "rope_theta": 100000.0},
    "llama-3.2-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8,
                     "tie_word_embeddings": True, **LLAMA3},
    "llama-3.1-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8,
                     "tie_word_embeddings": False, **LLAMA3},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512},
}  # fmt: skip
# name: (our kernels, chunked loss, gradient checkpointing, compile, fused LoRA dropout)
CONFIGS = {
    "stock": (False, False, True, False, False),
    "ours": (True, True, True, False, True),
    "ours_no_ckpt": (True, True, False, False, True),
    "+kernels": (True, False, True, False, False),
    "+chunked_ce": (False, True, True, False, False),
    "+no_ckpt": (False, False, False, False, False),
    "+compile": (False, False, True, True, False),
    "+fused_dropout": (False, False, True, False, True),
}
LORA_DROPOUT = 0.05  # the product's default: what stock peft's nn.Dropout costs, and ours
OVERRUN_S = 60  # how long a configuration may run past the budget before it is stopped
# What runs for each shape, most important first; the 8B shape runs only what decides the target.
PLAN = {"llama-3.1-8b": ["stock", "ours", "ours_no_ckpt"]}


def build(shape: str, device: Any, kernels: bool, ckpt: bool, fused_dropout: bool) -> Any:
    """A random-initialised Llama of `shape`, NF4-quantised like from_pretrained does, with a
    fresh LoRA r=16 (dropout 0.05) on all linear layers, prepared for k-bit training as the
    recipe does; `fused_dropout` moves the dropout into lora_A as the recipe does."""
    import bitsandbytes as bnb
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], use_cache=False, attn_implementation="sdpa")
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    for parent in list(model.model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                quantized = bnb.nn.Linear4bit(
                    child.in_features, child.out_features, bias=child.bias is not None,
                    compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4",
                    quant_storage=torch.uint8, device="meta",
                )  # fmt: skip
                quantized.weight = bnb.nn.Params4bit(
                    child.weight.data, requires_grad=False, compress_statistics=True,
                    quant_type="nf4", quant_storage=torch.uint8,
                )  # fmt: skip
                setattr(parent, name, quantized.to(device))  # .to quantizes
    model.is_loaded_in_4bit = True  # what from_pretrained sets; peft reads it
    if kernels:
        from finetune_core.kernels import enable_linear4bit_patch

        enable_linear4bit_patch()
    model = prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=ckpt,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=LORA_DROPOUT, target_modules="all-linear",
                      task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(model, lora)
    if fused_dropout:
        from finetune_core.train.lora_dropout import fuse_lora_dropout

        fuse_lora_dropout(model)
    return model


def child(opts: argparse.Namespace) -> dict[str, Any]:
    """One configuration of one shape: build, warm up, time `steps` optimizer steps."""
    import torch

    from finetune_core.train.recipe import token_loss_sum

    kernels, chunked, ckpt, compiled, fused_dropout = CONFIGS[opts.config]
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if kernels:
        from finetune_core.kernels import ops

        kind = "cuda" if cuda else "cpu"
        if not (ops.load_cuda_extension() if cuda else ops.load_extension()):
            raise SystemExit(f"our {kind} kernels did not load: {ops.load_failure(kind)}")
    model = build(opts.shape, device, kernels, ckpt, fused_dropout)
    if compiled:
        for layer in model.get_base_model().model.layers:
            layer.compile()
    params = [p for p in model.parameters() if p.requires_grad]
    if cuda:
        import bitsandbytes as bnb

        optimizer: Any = bnb.optim.PagedAdamW8bit(params, lr=1e-4)
    else:
        optimizer = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, SHAPES[opts.shape]["vocab_size"], (opts.batch, opts.seq), generator=gen)
    batch = {"input_ids": ids, "labels": ids, "position_ids": torch.arange(opts.seq).expand_as(ids)}
    batch = {k: v.to(device) for k, v in batch.items()}
    losses, started = [], 0.0
    for step in range(opts.warmup + opts.steps):
        if step == opts.warmup:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
        if chunked:
            total, n = token_loss_sum(model, batch)
            loss = total / n
        else:
            loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    trained = opts.steps * opts.batch * (opts.seq - 1)  # every next token is trained
    peak = (
        torch.cuda.max_memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "tokens_per_s": trained / elapsed,
        "step_s": elapsed / opts.steps,
        "peak_bytes": peak,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }


def run_one(opts: argparse.Namespace, shape: str, config: str, left_s: float) -> dict[str, Any]:
    """`config` of `shape` in a process of its own; its JSON line, or why it has none."""
    cmd = [sys.executable, __file__, "--child", "--shape", shape, "--config", config]
    cmd += [f"--{k}={getattr(opts, k)}" for k in ("batch", "seq", "steps", "warmup")]
    started = time.monotonic()
    row: dict[str, Any] = {"shape": shape, "config": config}
    limit = left_s + OVERRUN_S
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return row | {"error": f"still running {limit:.0f} s after it started: stopped"}
    row["wall_s"] = round(time.monotonic() - started, 1)
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode == 0 and lines:
        return row | json.loads(lines[-1])
    tail = res.stderr.strip().splitlines()[-3:]
    oom = "OutOfMemoryError" in res.stderr or "out of memory" in res.stderr
    return row | {"error": "out of memory" if oom else " | ".join(tail) or f"exit {res.returncode}"}


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per shape and configuration: tokens/s and peak memory as ratios to the shape's stock."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    stock = {r["shape"]: r for r in rows if r["config"] == "stock" and "tokens_per_s" in r}
    for r in rows:
        base = stock.get(r["shape"])
        if base is None or "tokens_per_s" not in r or r["config"] == "stock":
            continue
        out.setdefault(r["shape"], {})[r["config"]] = {
            "useful_tokens_per_s": round(r["tokens_per_s"] / base["tokens_per_s"], 3),
            "peak_memory": round(r["peak_bytes"] / base["peak_bytes"], 3),
        }
    return out


def report(rows: list[dict[str, Any]]) -> None:
    print(f"{'shape':<14} {'config':<13} {'tokens/s':>10} {'step s':>8} {'peak GiB':>9} "
          f"{'loss first':>10} {'loss last':>10}")  # fmt: skip
    for r in rows:
        if "tokens_per_s" not in r:
            print(f"{r['shape']:<14} {r['config']:<13} {r.get('error') or r.get('skipped')}")
            continue
        print(f"{r['shape']:<14} {r['config']:<13} {r['tokens_per_s']:>10.0f} {r['step_s']:>8.3f} "
              f"{r['peak_bytes'] / 2**30:>9.2f} {r['loss_first']:>10.4f} {r['loss_last']:>10.4f}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="also write the result here")
    p.add_argument("--wheel-dir", type=Path, default=REPO / ".whl")
    p.add_argument("--budget-s", type=float, default=330.0, help="start no run after this")
    p.add_argument("--quick", action="store_true", help="a tiny shape: checks the script on a CPU")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.child:
        print(json.dumps(child(opts)), flush=True)
        return
    started = time.monotonic()
    ensure_bitsandbytes(opts.wheel_dir)
    if opts.quick:
        opts.batch, opts.seq, opts.steps, opts.warmup = 2, 64, 2, 1
    # The 8B shape first: its targets decide, and the budget may not reach the end.
    shapes = ["tiny"] if opts.quick else ["llama-3.1-8b", "smollm2-135m", "llama-3.2-1b"]
    prebuild()
    rows: list[dict[str, Any]] = []
    for shape in shapes:
        for config in PLAN.get(shape, list(CONFIGS)):
            left = opts.budget_s - (time.monotonic() - started)
            if left <= 0:
                rows.append({"shape": shape, "config": config, "skipped": "the budget was spent"})
                continue
            rows.append(run_one(opts, shape, config, left))
            print(json.dumps(rows[-1]), flush=True)
            write(opts, rows)
    report(rows)
    print(json.dumps(write(opts, rows)))


def write(opts: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The result so far, written to --json (after each configuration)."""
    result = {"settings": {k: getattr(opts, k) for k in ("batch", "seq", "steps", "warmup")},
              "rows": rows, "ratio_vs_stock": ratios(rows)}  # fmt: skip
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


def prebuild() -> None:
    """Build our CUDA kernels once, before the children need them (nvcc takes minutes)."""
    import torch

    if torch.cuda.is_available():
        from finetune_core.kernels import ops

        print(f"our CUDA kernels built: {ops.load_cuda_extension()}", flush=True)


if __name__ == "__main__":
    main()
