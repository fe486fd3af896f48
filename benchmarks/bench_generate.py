"""make bench-generate: generation tokens/s with our compiled NF4 path against stock bitsandbytes.

The same 4-bit SmolLM2-135M (nf4, double quantization, bf16 compute), the same chat-rendered
BIG-bench prompts and greedy decoding with a fixed number of new tokens, at batch 1 and
batch 16. Each path runs in its own process (TUNEBOOK_NF4_BACKEND=auto vs bitsandbytes), the
rounds alternate ours / stock so load drift hits both, and every timing is repeated (median).
Prints tokens/s, the ratios ours/stock, whether the generated tokens are identical, and JSON.

    python -m benchmarks.bench_generate [--new-tokens 32] [--repeats 3] [--rounds 1] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

MODEL = "smollm2-135m-instruct"
TASK = "sports_understanding"
BATCHES = (1, 16)


def _prompts(tokenizer: Any, n: int) -> list[list[int]]:
    from finetune_core.data import bigbench_task_path
    from finetune_core.data.render import render_prompt
    from finetune_core.data.types import Message

    examples = json.loads(bigbench_task_path(TASK).read_text())["examples"][:n]
    question = "Is the following sentence plausible? Explain briefly.\n"
    return [
        render_prompt(tokenizer, [Message(role="user", content=question + e["input"])])
        for e in examples
    ]


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One path in this process: load, warm up, time each batch size `repeats` times."""
    import torch

    from finetune_core.infer.generate import left_pad
    from finetune_core.models import load_model, load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(MODEL)
    model = load_model(MODEL, quantization="nf4", device=torch.device("cpu")).eval()
    prompts = _prompts(tokenizer, max(BATCHES))
    result: dict[str, Any] = {
        "backend": os.environ.get("TUNEBOOK_NF4_BACKEND", "auto"),
        "threads": torch.get_num_threads(),
    }
    for batch in BATCHES:
        ids, mask = left_pad(prompts[:batch], tokenizer.pad_token_id)

        def run(new: int, ids: torch.Tensor = ids, mask: torch.Tensor = mask) -> torch.Tensor:
            with torch.inference_mode():
                return model.generate(
                    input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new,
                    min_new_tokens=new, pad_token_id=tokenizer.pad_token_id, top_p=None,
                    top_k=None, temperature=None,
                )  # fmt: skip

        run(4)  # warm-up: first-call allocations, kernel build / load
        times, out = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = run(args.new_tokens)
            times.append(time.perf_counter() - t0)
        assert out is not None
        result[f"batch{batch}"] = {
            "seconds": times,
            "tokens_per_s": batch * args.new_tokens / statistics.median(times),
            "tokens": out[:, ids.shape[1] :].tolist(),
        }
    return result


def _child(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "TUNEBOOK_NF4_BACKEND": backend}
    cmd = [sys.executable, "-m", "benchmarks.bench_generate", "--worker"]
    cmd += ["--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats)]
    cmd += ["--threads", str(args.threads)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{backend} worker failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _divergence(a: list[list[int]], b: list[list[int]]) -> dict[str, Any]:
    rows = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    first = [
        next(j for j, (p, q) in enumerate(zip(a[i], b[i], strict=True)) if p != q) for i in rows
    ]
    return {"identical_rows": len(a) - len(rows), "rows": len(a), "first_diff_at": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="ours/stock process pairs")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads in both paths (0: torch's default)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    load = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "stock": []}
    for _ in range(args.rounds):
        runs["ours"].append(_child("auto", args))
        runs["stock"].append(_child("bitsandbytes", args))
    summary: dict[str, Any] = {
        "model": MODEL,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "threads": runs["ours"][0]["threads"],
        "loadavg_1min": [load, os.getloadavg()[0]],
    }
    print(
        f"{MODEL} nf4, greedy, {args.new_tokens} new tokens, {summary['threads']} threads, "
        f"load average {load:.1f}"
    )
    print(f"{'batch':>5} {'ours tok/s':>11} {'stock tok/s':>12} {'ratio':>7}  outputs")
    for batch in BATCHES:
        key = f"batch{batch}"
        tps = {
            path: statistics.median(
                batch * args.new_tokens / s for r in rs for s in r[key]["seconds"]
            )
            for path, rs in runs.items()
        }
        same = _divergence(runs["ours"][0][key]["tokens"], runs["stock"][0][key]["tokens"])
        summary[key] = {
            "ours_tokens_per_s": tps["ours"],
            "stock_tokens_per_s": tps["stock"],
            "ratio": tps["ours"] / tps["stock"],
            "outputs": same,
        }
        note = (
            "identical"
            if same["identical_rows"] == same["rows"]
            else f"{same['identical_rows']}/{same['rows']} rows identical, "
            f"first differences at new token {same['first_diff_at']}"
        )
        print(
            f"{batch:5d} {tps['ours']:11.1f} {tps['stock']:12.1f} {tps['ours'] / tps['stock']:6.2f}x  {note}"
        )  # noqa: E501
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
