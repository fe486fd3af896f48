"""make bench-sampling: our top-p (finetune_core/infer/nucleus.py) against transformers'.

Trans-LoRA's synthesis samples Gemma-3-270M (262,144-token vocabulary) at temperature
1.0 and top-p 0.95. This records the real logits of one synthesis batch (16 list prompts
from BIG-bench seeds, every step), then times on each step, alternating so load drift
hits both: transformers' TemperatureLogitsWarper + TopPLogitsWarper (a full sort of
every row) against our NucleusSampling (the nucleus looked for among the 1,024 most
likely tokens, the full sort only for wider rows). Prints per-step medians, the ratio,
how many rows kept exactly the same tokens, and one JSON line.

    python -m benchmarks.bench_sampling [--batch 16] [--steps 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

MODEL = "gemma-3-270m"
TASK = "arithmetic-2_digit_addition"


def record_logits(batch: int, steps: int, temperature: float, top_p: float) -> list[torch.Tensor]:
    """The logits Gemma-3 hands to the sampler at each step of one real synthesis batch."""
    from transformers import LogitsProcessorList

    from finetune_core.data import bigbench_task_path, read_examples
    from finetune_core.infer import load_chat_model
    from finetune_core.infer.generate import left_pad
    from finetune_core.infer.nucleus import NucleusSampling
    from finetune_core.transfer.seeds import list_prompt, task_input

    seeds = [task_input(e) for e in list(read_examples(bigbench_task_path(TASK)))[:5]]
    chat = load_chat_model(MODEL)
    tok = chat.tokenizer
    # Each prompt lists the seeds in its own order, as synthesis does.
    prompts = [list_prompt(seeds[i % 5 :] + seeds[: i % 5]) for i in range(batch)]
    ids, mask = left_pad([tok(p)["input_ids"] for p in prompts], tok.pad_token_id)
    seen: list[torch.Tensor] = []
    sampler = NucleusSampling(temperature, top_p)

    def record(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen.append(scores.detach().float().clone())
        return sampler(input_ids, scores)

    torch.manual_seed(0)
    chat.model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=steps, min_new_tokens=steps,
        do_sample=True, temperature=1.0, top_p=1.0, top_k=None,
        logits_processor=LogitsProcessorList([record]), pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    return seen


def stock(scores: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    warped = TemperatureLogitsWarper(temperature)(None, scores)
    return TopPLogitsWarper(top_p)(None, warped)


def timed(fn: Any, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from finetune_core.infer.nucleus import NucleusSampling

    logits = record_logits(args.batch, args.steps, args.temperature, args.top_p)
    ours_fn = NucleusSampling(args.temperature, args.top_p)
    ours_s, stock_s, same_rows, wide_rows, kept = [], [], 0, 0, []
    for scores in logits:
        t_stock, theirs = timed(
            lambda s=scores: stock(s.clone(), args.temperature, args.top_p), args.repeats
        )
        t_ours, ours = timed(lambda s=scores: ours_fn(None, s.clone()), args.repeats)
        stock_s.append(t_stock)
        ours_s.append(t_ours)
        same = (torch.isinf(ours) == torch.isinf(theirs)).all(-1)
        same_rows += int(same.sum())
        counts = (~torch.isinf(ours)).sum(-1)
        wide_rows += int((counts > ours_fn.k).sum())
        kept += counts.tolist()
    rows = len(logits) * args.batch
    return {
        "model": MODEL,
        "vocab": int(logits[0].shape[-1]),
        "batch": args.batch,
        "steps": len(logits),
        "temperature": args.temperature,
        "top_p": args.top_p,
        "threads": torch.get_num_threads(),
        "stock_ms_per_step": round(1000 * statistics.median(stock_s), 2),
        "ours_ms_per_step": round(1000 * statistics.median(ours_s), 2),
        "speedup": round(sum(stock_s) / sum(ours_s), 2),
        "rows_with_identical_kept_set": f"{same_rows}/{rows}",
        "rows_on_the_full_sort": wide_rows,
        "kept_tokens_median": int(statistics.median(kept)),
        "kept_tokens_max": int(max(kept)),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, default=16, help="rows per step (synthesis: 16)")
    p.add_argument("--steps", type=int, default=20, help="decoding steps recorded")
    p.add_argument("--repeats", type=int, default=5, help="timings per step (median)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.95)
    result = run(p.parse_args())
    print(
        f"top-p on {result['batch']}x{result['vocab']} logits, {result['steps']} real steps: "
        f"transformers {result['stock_ms_per_step']} ms/step, ours {result['ours_ms_per_step']} "
        f"ms/step, {result['speedup']}x; identical kept sets "
        f"{result['rows_with_identical_kept_set']}, full-sort rows {result['rows_on_the_full_sort']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
