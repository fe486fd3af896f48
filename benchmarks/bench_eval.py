"""make bench-eval: answer and judge throughput with the local judge, its consistency
under swap, and whether it agrees with the references at all.

Two candidates (default: SmolLM2-135M-Instruct and Gemma-3-270M base) answer a
sample of a BIG-bench task (fresh answers: in-memory caches). Answers/s is
measured batched (--batch-size) and, on the first --unbatched-items items,
one prompt at a time, for the gain of batching. Then the local judge (SmolLM2 by
default) compares every answer pair in both orders in each --styles:

  verdict-first  verdict-first prompt, the verdict read off the model's
                 probabilities over [[A]]/[[B]]/[[C]] (no text generated)
  rationale      MT-Bench prompt, up to --judge-max-tokens of rationale, then the
                 constrained verdict (on the first --rationale-items items)
  free-text      the old path: the judge's text parsed for [[A]]/[[B]]/[[C]]

Each style reports judgments/min (judge calls, retries included), the share of
verdicts that parsed, the consistency rate under swap, how often the first
position won, the mean confidence, and agreement with the references: on pairs
where exactly one answer is correct (exact match, or it names one choice and
that one is accepted), how often the judge picked that one (per order and after
the swap), strictly and position-calibrated (both orders' probabilities
averaged). A control row per --control-judge judges each item's accepted choice
against a wrong one (verdict-first), where the right answer is known. Prints a table
and one JSON line.

    python -m benchmarks.bench_eval [--limit 20] [--task sports_understanding]
        [--candidate base:smollm2-135m-instruct --candidate base:gemma-3-270m]
        [--judge smollm2-135m-instruct] [--styles verdict-first,rationale]
        [--control-judge smollm2-135m-instruct --control-judge gemma-3-270m] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any

JUDGE = "smollm2-135m-instruct"
CANDIDATES = ["base:smollm2-135m-instruct", "base:gemma-3-270m"]
CONTROL_JUDGES = ["smollm2-135m-instruct", "gemma-3-270m"]  # beside --judge
STYLES = ("verdict-first", "rationale", "free-text")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def named_choice(text: str, choices: tuple[str, ...]) -> str | None:
    """The one choice the answer names; None when it names none or several
    ("plausible or implausible" decides nothing; "implausible" is not "plausible")."""
    named = {c for c in choices if re.search(r"\b" + re.escape(c.lower()) + r"\b", text.lower())}
    return named.pop() if len(named) == 1 else None


def correctness(es: Any, answers: dict) -> dict[str, dict[str, bool]]:
    """{candidate: {item id: correct}}: exact match, or the one named choice is accepted."""
    from finetune_core.evaluate import exact_match

    out: dict[str, dict[str, bool]] = {}
    for cand, by_item in answers.items():
        out[cand] = {}
        for it in es:
            a = by_item[it.id]
            if not it.references or a.status != "ok":
                continue
            em = exact_match(a.text, it.references, es.output_regex)
            out[cand][it.id] = em or named_choice(a.text, it.choices) in it.references
    return out


def answer_rate(cands: list, es: Any, pool: Any, dec: Any, batch: int) -> tuple[dict, float]:
    from finetune_core.evaluate import AnswerCache, generate_answers

    start = time.perf_counter()
    answers = generate_answers(
        cands, es, decoding=dec, cache=AnswerCache(":memory:"), pool=pool, batch_size=batch
    )
    return answers, len(cands) * len(es) / (time.perf_counter() - start)


def reference_agreement(judged: list, correct: dict) -> dict[str, Any]:
    """On pairs with exactly one correct answer: does the judge pick it?"""
    per_order, outcomes = [], {"agree": 0, "tie": 0, "disagree": 0}
    for r in judged:
        ca, cb = correct[r.a].get(r.item_id), correct[r.b].get(r.item_id)
        if ca is None or cb is None or ca == cb or r.outcome not in ("a", "b", "tie"):
            continue
        winner = "a" if ca else "b"
        # A-first: the right verdict names a's letter when a is correct; B-first flips it.
        for j, want in ((r.ab, "A" if ca else "B"), (r.ba, "B" if ca else "A")):
            if j.status == "ok":
                per_order.append(j.value == want)
        key = "tie" if r.outcome == "tie" else "agree" if r.outcome == winner else "disagree"
        outcomes[key] += 1
    n = sum(outcomes.values())
    return {
        "decisive_pairs": n,
        **outcomes,
        "accuracy": outcomes["agree"] / n if n else None,
        "per_order_accuracy": sum(per_order) / len(per_order) if per_order else None,
    }


def judge_style(
    style: str,
    es: Any,
    answers: dict,
    correct: dict,
    pool: Any,
    args: Any,
    judge_model: str | None = None,
) -> dict:
    from dataclasses import replace

    from finetune_core.evaluate import (
        Judge,
        LocalBackend,
        calibrated_pair_summary,
        consistency_rate,
        pair_summary,
    )

    backend = LocalBackend(
        pool.get(judge_model or args.judge),
        batch_size=args.judge_batch_size,
        constrained=style != "free-text",
    )
    judge = Judge(backend, max_tokens=args.judge_max_tokens, verdict_first=style == "verdict-first")
    say(f"judging {len(es)} items, both orders: {style}")
    start = time.perf_counter()
    judged = judge.compare(es, answers)
    seconds = time.perf_counter() - start
    verdicts = [j for r in judged for j in (r.ab, r.ba)]
    ok = [j for j in verdicts if j.status == "ok"]
    confidences = [j.confidence for j in ok if j.confidence is not None]
    (pair,) = pair_summary(judged, n_boot=200)
    calibrated = [replace(r, outcome=r.calibrated) for r in judged if r.calibrated]
    cal = calibrated_pair_summary(judged, n_boot=200)
    return {
        "style": style,
        "items": len(es),
        "judge_calls": backend.calls,
        "judge_s": round(seconds, 2),
        "judgments_per_min": 60 * backend.calls / seconds,
        "parsed_rate": len(ok) / len(verdicts) if verdicts else None,
        "consistency_rate": consistency_rate(judged)["rate"],
        "first_position_rate": sum(j.value == "A" for j in ok) / len(ok) if ok else None,
        "tie_verdict_rate": sum(j.value == "tie" for j in ok) / len(ok) if ok else None,
        "mean_confidence": sum(confidences) / len(confidences) if confidences else None,
        "reference": reference_agreement(judged, correct),
        "wtl": f"{pair['wins']}/{pair['ties']}/{pair['losses']} e{pair['errors']}",
        "win_rate": pair["win_rate"],
        # Both orders' probabilities averaged: a constant first-slot bias cancels.
        "calibrated_wtl": f"{cal[0]['wins']}/{cal[0]['ties']}/{cal[0]['losses']}" if cal else None,
        "calibrated_reference": reference_agreement(calibrated, correct) if calibrated else None,
        "prompt_version": judged[0].prompt_version if judged else None,
    }


def control(es: Any, pool: Any, args: Any, judge_model: str) -> dict[str, Any]:
    """The judge on answers whose correctness is known: an accepted choice against a
    wrong one, per item. A judge that reads the reference should win this outright."""
    from finetune_core.evaluate import Answer
    from finetune_core.evaluate.sets import EvalSet

    items = [it for it in es if it.references and set(it.choices) - set(it.references)]
    sub = EvalSet(es.name, items, es.output_regex)
    wrong = {it.id: next(c for c in it.choices if c not in it.references) for it in items}
    answers = {
        "gold": {it.id: Answer(it.references[0]) for it in items},
        "wrong": {it.id: Answer(wrong[it.id]) for it in items},
    }
    correct = {"gold": dict.fromkeys(wrong, True), "wrong": dict.fromkeys(wrong, False)}
    row = judge_style("verdict-first", sub, answers, correct, pool, args, judge_model)
    return {**row, "style": f"control:{judge_model.split('-')[0]}", "judge": judge_model}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from finetune_core.evaluate import Decoding, ModelPool, from_bigbench, parse_candidate

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    pool = ModelPool(
        args.quantization or ("nf4" if cuda else "none"), None if cuda else torch.float32
    )
    es = from_bigbench(args.task).head(args.limit)
    cands = [parse_candidate(s) for s in args.candidate or CANDIDATES]
    start = time.perf_counter()
    controls = args.control_judge or list(dict.fromkeys([args.judge, *CONTROL_JUDGES]))
    for name in {args.judge, *(controls if args.control else [])}:
        pool.get(name)  # load time is not answering or judging time
    for c in cands:
        pool.get(c.model, c.adapter)
    load_s = time.perf_counter() - start
    dec = Decoding(max_new_tokens=args.max_new_tokens)
    speed: dict[str, Any] = {"batch_size": args.batch_size}
    if args.unbatched_items:
        few = es.head(args.unbatched_items)
        say(f"answers on {len(few)} items: one at a time, then batched")
        _, speed["unbatched_answers_per_s"] = answer_rate(cands, few, pool, dec, 1)
        _, speed["batched_answers_per_s_same_items"] = answer_rate(
            cands, few, pool, dec, args.batch_size
        )
        speed["batching_gain"] = (
            speed["batched_answers_per_s_same_items"] / speed["unbatched_answers_per_s"]
        )
    say(f"answers on {len(es)} items, batch {args.batch_size}")
    answers, rate = answer_rate(cands, es, pool, dec, args.batch_size)
    correct = correctness(es, answers)
    styles = []
    for style in args.styles.split(","):
        sub = es.head(args.rationale_items) if style != "verdict-first" else es
        styles.append(judge_style(style, sub, answers, correct, pool, args))
    for judge_model in controls if args.control else []:
        say(f"control with {judge_model}: an accepted choice against a wrong one")
        styles.append(control(es, pool, args, judge_model))
    return {
        "task": args.task,
        "items": len(es),
        "candidates": [c.label for c in cands],
        "judge": args.judge,
        "device": "cuda" if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "answers": len(cands) * len(es),
        "answers_per_s": rate,
        **speed,
        "accuracy": {c: sum(v.values()) / len(v) if v else None for c, v in correct.items()},
        "styles": styles,
        "sample_answers": {c: by[es.items[0].id].text[:160] for c, by in answers.items()},
    }


def print_table(r: dict[str, Any]) -> None:
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    print(f"task {r['task']}, {r['items']} items, judge {r['judge']} on {r['device']}")
    print(f"  answers/s (batch {r['batch_size']}) {fmt(r['answers_per_s'])} over {r['answers']}")
    if "batching_gain" in r:
        print(
            f"  same items: 1 at a time {fmt(r['unbatched_answers_per_s'])}/s, batched"
            f" {fmt(r['batched_answers_per_s_same_items'])}/s, gain {fmt(r['batching_gain'])}x"
        )
    for c, acc in r["accuracy"].items():
        print(f"  {c:32} correct (EM or named choice) {fmt(acc)}")
    cols = [
        ("style", "style"),
        ("items", "items"),
        ("calls", "judge_calls"),
        ("judg/min", "judgments_per_min"),
        ("parsed", "parsed_rate"),
        ("consist", "consistency_rate"),
        ("A-first", "first_position_rate"),
        ("conf", "mean_confidence"),
        ("W/T/L", "wtl"),
    ]
    print("  " + " ".join(f"{h:>13}" for h, _ in cols) + "   ref acc (per order) [decisive n]")
    for s in r["styles"]:
        ref = s["reference"]
        print(
            "  "
            + " ".join(f"{fmt(s[k]):>13}" for _, k in cols)
            + f"   {fmt(ref['accuracy'])} ({fmt(ref['per_order_accuracy'])})"
            f" [{ref['decisive_pairs']}]"
        )
    for s in r["styles"]:
        cal = s["calibrated_reference"]
        if cal:
            print(
                f"  {s['style']:>13} position-calibrated: W/T/L {s['calibrated_wtl']},"
                f" ref acc {fmt(cal['accuracy'])} [{cal['decisive_pairs']}]"
            )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--task", default="sports_understanding")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--candidate", action="append", help="as in `evaluate` (default: two)")
    p.add_argument("--judge", default=JUDGE)
    p.add_argument("--styles", default="verdict-first,rationale", help=f"comma list of {STYLES}")
    p.add_argument("--rationale-items", type=int, default=6, help="items for non-verdict-first")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--judge-max-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8, help="answers per generate() call")
    p.add_argument("--judge-batch-size", type=int, default=4)
    p.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="skip judging an accepted choice against a wrong one",
    )
    p.add_argument(
        "--control-judge",
        action="append",
        help="judge(s) for the control rows (default: --judge, SmolLM2 and Gemma)",
    )
    p.add_argument("--unbatched-items", type=int, default=4, help="0: skip the batching gain")
    p.add_argument("--quantization", choices=["nf4", "none"], help="default: nf4 on CUDA")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default); 1 on busy CPUs"
    )
    args = p.parse_args()
    bad = set(args.styles.split(",")) - set(STYLES)
    if bad:
        p.error(f"unknown styles {sorted(bad)}: use {STYLES}")
    r = run(args)
    print_table(r)
    print(json.dumps({"benchmark": "eval", **r}, default=str))


if __name__ == "__main__":
    main()
