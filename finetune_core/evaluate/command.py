"""The `evaluate` CLI subcommand: flags and the printed report (kept out of cli.py)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from finetune_core.contracts.egress import ALLOW_ENV, EgressPolicy

HELP = "compare base, adapter and API models: reference metrics and an LLM judge"
DESCRIPTION = """Evaluate candidates on an eval set: answers are generated in batches and cached
(adding a candidate never regenerates the others), reference metrics (exact match,
multiple-choice accuracy, validation loss/perplexity) get bootstrap 95% CIs, and a
judge compares every pair of answers in both orders (MT-Bench prompts), or grades
each answer 1-10 with --mode single.

candidates (repeat --candidate; prefix LABEL= to name one):
  base:MODEL                    a built-in or local base model
  adapter:MODEL:PATH            MODEL + a PEFT adapter, checkpoint or run folder
  openai:MODEL@BASE_URL         any OpenAI-compatible endpoint (key: --api-key-env)
judge: local:MODEL (default local:gemma-3-270m, the best offline judge measured), openai:MODEL@BASE_URL, none
  A local judge writes its rationale, then its verdict is the most likely allowed
  label ([[A]]/[[B]]/[[C]], 1-10) under the model: always parseable, with its
  probabilities recorded. --verdict-first skips the rationale (fast, for small
  judges); --free-text-judge parses the local judge's text as an API judge's.

example:
  python -m finetune_core evaluate --task sports_understanding --limit 20 \\
    --candidate base:smollm2-135m-instruct \\
    --candidate tuned=adapter:smollm2-135m-instruct:runs/demo \\
    --judge local:smollm2-135m-instruct --out results.json"""


def add_parser(sub: Any) -> None:
    e = sub.add_parser(
        "evaluate",
        help=HELP,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="a BIG-bench task: bundled name or task.json path")
    src.add_argument(
        "--prompts", help='JSONL: "prompt", optional "reference(s)", "choices", "category"'
    )
    src.add_argument("--data", help="a training file: its validation split is evaluated")
    e.add_argument("--val-fraction", type=float, default=0.1, help="with --data (as in train)")
    e.add_argument("--seed", type=int, default=0, help="split, bootstrap and judge-retry seed")
    e.add_argument("--limit", type=int, help="evaluate only the first N items")
    e.add_argument("--candidate", action="append", required=True, help="see above; repeat")
    e.add_argument(
        "--baseline", help="label to compare every other candidate with (default: all pairs)"
    )
    e.add_argument("--judge", default="local:gemma-3-270m", help="see above")
    e.add_argument("--mode", choices=["pairwise", "single", "both"], default="pairwise")
    e.add_argument("--no-reference", action="store_true", help="judge without reference answers")
    e.add_argument("--metrics", default="exact_match,choice,loss", help="comma list, or none")
    e.add_argument("--max-new-tokens", type=int, default=128, help="answer length")
    e.add_argument("--temperature", type=float, default=0.0, help="answers; 0: greedy")
    e.add_argument("--judge-max-tokens", type=int, default=512, help="judge text (rationale)")
    e.add_argument(
        "--verdict-first", action="store_true", help="verdict-first judge prompts; no rationale"
    )
    e.add_argument(
        "--free-text-judge",
        action="store_true",
        help="parse a local judge's free text instead of constraining its verdict",
    )
    e.add_argument("--quantization", default="nf4", choices=["nf4", "none"])
    e.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the API key")
    e.add_argument(
        "--egress-allow",
        type=_egress_policy,
        default=os.environ.get(ALLOW_ENV, ""),
        metavar="HOST[:PORT],...",
        help="private or loopback hosts API endpoints may reach, e.g. an on-premises judge "
        f"(default: ${ALLOW_ENV}; public addresses only without it)",
    )
    e.add_argument("--concurrency", type=int, default=4, help="parallel API requests")
    e.add_argument("--timeout", type=float, default=60.0, help="seconds per API request")
    e.add_argument("--max-judge-calls", type=int, help="stop judging after N prompts")
    e.add_argument("--budget", type=float, help="API judge spend cap (same unit as the prices)")
    e.add_argument("--price-prompt", type=float, default=0.0, help="price per 1K prompt tokens")
    e.add_argument("--price-completion", type=float, default=0.0, help="per 1K completion tokens")
    e.add_argument("--human-votes", help='JSONL {"item_id","a","b","vote"} for judge agreement')
    e.add_argument("--cache", help="answer cache file (default: under FINETUNE_CORE_CACHE)")
    e.add_argument("--out", help="write the full result as JSON")
    e.add_argument("--csv", help="CSV prefix: PREFIX.answers.csv, PREFIX.pairs.csv, ...")


def _egress_policy(text: str) -> EgressPolicy:
    try:
        return EgressPolicy.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def print_report(result: dict[str, Any]) -> None:
    es = result["eval_set"]
    print(
        f"eval set {es['name']}: {es['n_items']} items, {result['answers_generated']} answers generated"
    )
    for cand, ms in result["metrics"].items():
        for name, s in ms.items():
            print(
                f"  {cand:32} {name:16} {_fmt(s['value'])} [{_fmt(s['low'])}, {_fmt(s['high'])}] n={s['n']}"
            )
    for p in result.get("pairs", []):
        print(
            f"  {p['a']} vs {p['b']}: W/T/L {p['wins']}/{p['ties']}/{p['losses']}, errors {p['errors']},"
            f" skipped {p['skipped']}, win rate {_fmt(p['win_rate'])} [{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}],"
            f" consistent under swap {_fmt(p['consistency'])}"
        )
    for p in result.get("pairs_calibrated", []):
        print(
            f"  {p['a']} vs {p['b']} position-calibrated (both orders' probabilities averaged):"
            f" W/T/L {p['wins']}/{p['ties']}/{p['losses']}, win rate {_fmt(p['win_rate'])}"
            f" [{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}]"
        )
    for r in result.get("ranking", []):
        print(
            f"  #{r['rank']} {r['candidate']:32} BT {r['strength']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        )
    for g in result.get("grade_summary", []):
        print(
            f"  {g['candidate']:32} rating {_fmt(g['mean_rating'])} [{_fmt(g['ci_low'])}, {_fmt(g['ci_high'])}]"
        )
    if "human_agreement" in result:
        print(f"  judge-human agreement: {result['human_agreement']}")


def run(args: argparse.Namespace) -> int:
    from finetune_core.evaluate import sets
    from finetune_core.evaluate.cache import AnswerCache
    from finetune_core.evaluate.candidates import Decoding, ModelPool, parse_candidate
    from finetune_core.evaluate.endpoint import Budget
    from finetune_core.evaluate.export import write_csv, write_json
    from finetune_core.evaluate.run import make_judge, read_human_votes, run_evaluation

    if args.task:
        es = sets.from_bigbench(args.task)
    elif args.prompts:
        es = sets.from_prompt_file(args.prompts)
    else:
        es = sets.from_dataset(args.data, val_fraction=args.val_fraction, seed=args.seed)
    es = es.head(args.limit)
    key = os.environ.get(args.api_key_env, "none")
    cands = [parse_candidate(s, key) for s in args.candidate]
    pool = ModelPool(args.quantization)
    budget = Budget(args.budget, args.price_prompt, args.price_completion, args.max_judge_calls)
    endpoint = {
        "timeout": args.timeout,
        "concurrency": args.concurrency,
        "egress": args.egress_allow,
    }
    judge = make_judge(
        args.judge,
        pool=pool,
        api_key=key,
        budget=budget,
        endpoint_options=endpoint,
        max_tokens=args.judge_max_tokens,
        constrained=not args.free_text_judge,
        verdict_first=args.verdict_first,
        use_reference=not args.no_reference,
        seed=args.seed,
    )
    result = run_evaluation(
        es,
        cands,
        judge=judge,
        mode=args.mode,
        baseline=args.baseline,
        # The seed matters only when sampling; keeping it out of greedy keys keeps cache hits.
        decoding=Decoding(
            args.max_new_tokens, args.temperature, seed=args.seed if args.temperature > 0 else None
        ),
        metrics=[] if args.metrics == "none" else args.metrics.split(","),
        cache=AnswerCache(args.cache),
        pool=pool,
        human_votes=read_human_votes(args.human_votes) if args.human_votes else None,
        seed=args.seed,
        progress=lambda msg: print(msg, file=sys.stderr),
        endpoint_options=endpoint,
    )
    print_report(result)
    if args.out:
        print(f"wrote {write_json(result, args.out)}")
    if args.csv:
        for path in write_csv(result, args.csv):
            print(f"wrote {path}")
    return 0
