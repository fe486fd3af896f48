"""make bench-eval: answer and judge throughput with the local judge, and its consistency.

Two candidates answer a sample of a BIG-bench task (fresh answers: an in-memory
cache), then the local judge (SmolLM2-135M-Instruct by default) compares every
answer pair in both orders. Reports answers/s, judgments/min (judge calls,
retries included), the share of judgments the parser could read, and the
consistency rate under swap (verdicts that survive swapping A and B). Prints a
table and one JSON line.

    python -m benchmarks.bench_eval [--limit 20] [--task sports_understanding]
        [--candidate base:smollm2-135m-instruct --candidate base:tiny-llama]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

JUDGE = "smollm2-135m-instruct"
CANDIDATES = ["base:smollm2-135m-instruct", "base:tiny-llama"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from finetune_core.evaluate import (
        AnswerCache,
        Decoding,
        ModelPool,
        from_bigbench,
        make_judge,
        parse_candidate,
        run_evaluation,
    )

    cuda = torch.cuda.is_available()
    pool = ModelPool(
        args.quantization or ("nf4" if cuda else "none"), None if cuda else torch.float32
    )
    es = from_bigbench(args.task).head(args.limit)
    cands = [parse_candidate(s) for s in args.candidate or CANDIDATES]
    start = time.perf_counter()
    pool.get(args.judge)  # load time is not judging time
    for c in cands:
        pool.get(c.model, c.adapter)
    load_s = time.perf_counter() - start
    judge = make_judge(f"local:{args.judge}", pool=pool, max_tokens=args.judge_max_tokens)
    result = run_evaluation(
        es,
        cands,
        judge=judge,
        decoding=Decoding(max_new_tokens=args.max_new_tokens),
        metrics=["exact_match"],
        cache=AnswerCache(":memory:"),
        pool=pool,
        n_boot=200,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    t = result["timing"]
    judgments = result["judgments"]
    calls = sum(j[o]["attempts"] for j in judgments for o in ("ab", "ba"))
    orders = [j[o]["status"] for j in judgments for o in ("ab", "ba")]
    n_answers = len(cands) * len(es)
    return {
        "task": args.task,
        "items": len(es),
        "candidates": [c.label for c in cands],
        "judge": args.judge,
        "device": "cuda" if cuda else "cpu",
        "load_s": round(load_s, 2),
        "answers": n_answers,
        "answers_per_s": n_answers / t["answers_s"],
        "judge_calls": calls,
        "judgments_per_min": 60 * calls / t["pairwise_s"],
        "parsed_rate": orders.count("ok") / len(orders) if orders else None,
        "consistency_rate": result["consistency"]["rate"],
        "pairs": result["pairs"],
        "exact_match": {c: m["exact_match"]["value"] for c, m in result["metrics"].items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--task", default="sports_understanding")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--candidate", action="append", help="as in `evaluate` (default: two)")
    p.add_argument("--judge", default=JUDGE)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--judge-max-tokens", type=int, default=128)
    p.add_argument("--quantization", choices=["nf4", "none"], help="default: nf4 on CUDA")
    args = p.parse_args()
    r = run(args)
    fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    print(f"task {r['task']}, {r['items']} items, judge {r['judge']} on {r['device']}")
    for key in (
        "answers",
        "answers_per_s",
        "judge_calls",
        "judgments_per_min",
        "parsed_rate",
        "consistency_rate",
        "load_s",
    ):
        print(f"  {key:20} {fmt(r[key])}")
    for row in r["pairs"]:
        print(
            f"  {row['a']} vs {row['b']}: W/T/L {row['wins']}/{row['ties']}/{row['losses']}"
            f" errors {row['errors']} win rate {fmt(row['win_rate'])}"
        )
    print(json.dumps({"benchmark": "eval", **r}, default=str))


if __name__ == "__main__":
    main()
