"""One evaluation run: answers (cached), reference metrics, judge, aggregates, as a dict."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from finetune_core.contracts.hooks import Hooks
from finetune_core.errors import FinetuneError
from finetune_core.evaluate.aggregate import (
    by_category,
    calibrated_pair_summary,
    consistency_rate,
    grade_summary,
    judge_agreement,
    judge_votes,
    pair_summary,
    ranking,
)
from finetune_core.evaluate.cache import AnswerCache
from finetune_core.evaluate.candidates import Candidate, Decoding, ModelPool, generate_answers
from finetune_core.evaluate.endpoint import Budget, Endpoint
from finetune_core.evaluate.judge import Judge, LocalBackend
from finetune_core.evaluate.metrics import choice_accuracy, exact_match_scores, validation_loss
from finetune_core.evaluate.sets import EvalSet

METRICS = ("exact_match", "choice", "loss")


def make_judge(
    spec: str,
    *,
    pool: ModelPool | None = None,
    api_key: str = "none",
    budget: Budget | None = None,
    endpoint_options: dict[str, Any] | None = None,
    constrained: bool = True,
    **judge_options: Any,
) -> Judge | None:
    """ "none", "local:MODEL" (run here; the offline default) or "openai:MODEL@BASE_URL".

    A local judge picks its verdicts from the model's probabilities over the allowed
    labels unless constrained=False (then its free text is parsed, as an API judge's)."""
    if spec == "none":
        return None
    kind, _, rest = spec.partition(":")
    if kind == "local" and rest:
        backend: Any = LocalBackend(
            (pool or ModelPool()).get(rest), budget=budget, constrained=constrained
        )
    elif kind == "openai" and "@" in rest:
        model, url = rest.split("@", 1)
        backend = Endpoint(
            url, model, api_key, budget=budget or Budget(), **(endpoint_options or {})
        )
    else:
        raise FinetuneError(f"bad judge {spec!r}: use none, local:MODEL or openai:MODEL@BASE_URL")
    return Judge(backend, **judge_options)


def read_human_votes(path: str | Path) -> dict[tuple[str, str, str], list[str]]:
    """JSONL of {"item_id", "a", "b", "vote": "a" | "b" | "tie"}."""
    votes: dict[tuple[str, str, str], list[str]] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                r = json.loads(line)
                key, vote = (r["item_id"], r["a"], r["b"]), r["vote"]
            except (ValueError, KeyError, TypeError):
                raise FinetuneError(f"{path} line {n}: needs item_id, a, b and vote") from None
            if vote not in ("a", "b", "tie"):
                raise FinetuneError(f"{path} line {n}: vote must be a, b or tie")
            votes.setdefault(key, []).append(vote)
    return votes


def _metrics(
    cands: Sequence[Candidate],
    es: EvalSet,
    answers: dict,
    pool: ModelPool,
    which: Sequence[str],
    seed: int,
) -> dict:
    out: dict[str, dict[str, Any]] = {}
    for c in cands:
        m: dict[str, Any] = {}
        if "exact_match" in which and any(it.references for it in es):
            m["exact_match"] = exact_match_scores(es, answers[c.label], seed)
        if c.local and "choice" in which and any(len(it.choices) > 1 for it in es):
            m["choice_accuracy"] = choice_accuracy(pool.get(c.model, c.adapter), es, seed)
        if c.local and "loss" in which and any(it.references for it in es):
            loss = validation_loss(pool.get(c.model, c.adapter), es, seed=seed)
            m["loss"], m["perplexity"] = loss["loss"], loss["perplexity"]
        out[c.label] = m
    return out


def run_evaluation(
    evalset: EvalSet,
    candidates: Sequence[Candidate],
    *,
    judge: Judge | None = None,
    mode: str = "pairwise",  # pairwise | single | both
    baseline: str | None = None,  # compare every candidate with this one only
    decoding: Decoding | None = None,
    metrics: Sequence[str] = METRICS,
    cache: AnswerCache | None = None,
    pool: ModelPool | None = None,
    human_votes: dict | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    answer_batch_size: int = 8,
    hooks: Hooks | None = None,
    endpoint_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The evaluation as one dict. `progress` hears a line per step (the CLI); `hooks`
    (finetune_core.contracts.hooks) hear phases "answers" (per candidate), "metrics",
    "judging" and "grading" (info: judgments), progress per batch of answers and of
    judgments, and are asked should_stop between batches: Stopped, and no result.
    endpoint_options: Endpoint's fields for API candidates (timeout, egress, ...)."""
    hooks = hooks or Hooks()
    labels = [c.label for c in candidates]
    if len(set(labels)) != len(labels):
        raise FinetuneError(f"candidate labels must differ: {labels}; name them LABEL=spec")
    pool = pool or ModelPool()
    dec = decoding or Decoding()
    say = progress or (lambda _msg: None)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    answers = generate_answers(
        candidates,
        evalset,
        decoding=dec,
        cache=cache,
        pool=pool,
        batch_size=answer_batch_size,
        endpoint_options=endpoint_options,
        progress=say,
        hooks=hooks,
    )
    timing["answers_s"] = time.perf_counter() - t0
    fresh = sum(not a.cached for by in answers.values() for a in by.values())
    result: dict[str, Any] = {
        "eval_set": {
            "name": evalset.name,
            "n_items": len(evalset),
            "output_regex": evalset.output_regex,
        },
        "items": [
            {
                "id": it.id,
                "category": it.category,
                "prompt": it.prompt_text,
                "references": list(it.references),
            }
            for it in evalset
        ],
        "candidates": [c.to_dict() for c in candidates],
        "decoding": asdict(dec),
        "answers": {c: {i: asdict(a) for i, a in by.items()} for c, by in answers.items()},
        "answers_generated": fresh,
    }
    t0 = time.perf_counter()
    say("reference metrics")
    hooks.phase("metrics", {"candidates": len(candidates)})
    hooks.check("metrics")
    result["metrics"] = _metrics(candidates, evalset, answers, pool, metrics, seed)
    timing["metrics_s"] = time.perf_counter() - t0
    if judge is not None and len(candidates) >= 2 and mode in ("pairwise", "both"):
        pairs = [(baseline, c) for c in labels if c != baseline] if baseline else None
        say("judging pairs in both orders")
        t0 = time.perf_counter()
        judged = judge.compare(evalset, answers, pairs, _judge_progress("judging", hooks))
        timing["pairwise_s"] = time.perf_counter() - t0
        result["judgments"] = [asdict(j) for j in judged]
        result["pairs"] = pair_summary(judged, n_boot, seed)
        result["by_category"] = by_category(judged, n_boot, seed)
        result["ranking"] = (
            ranking(judged, n_boot=min(n_boot, 200), seed=seed) if len(labels) > 2 else []
        )
        result["consistency"] = consistency_rate(judged)
        if any(j.calibrated for j in judged):
            result["pairs_calibrated"] = calibrated_pair_summary(judged, n_boot, seed)
        if human_votes:
            result["human_agreement"] = judge_agreement(judge_votes(judged), human_votes)
    if judge is not None and mode in ("single", "both"):
        say("grading answers")
        t0 = time.perf_counter()
        grades = judge.grade(evalset, answers, _judge_progress("grading", hooks))
        timing["single_s"] = time.perf_counter() - t0
        result["grades"] = [asdict(g) for g in grades]
        result["grade_summary"] = grade_summary(grades, n_boot, seed)
    if judge is not None:
        budget = getattr(judge.backend, "budget", None)
        result["judge"] = {
            "backend": type(judge.backend).__name__,
            "model": getattr(judge.backend, "model", None)
            or getattr(judge.backend.chat, "name", ""),
            "prompt_versions": sorted(
                {t.version for t in (*judge.pair_templates, *judge.single_templates)}
            ),
            "budget": budget.to_dict() if budget else None,
            "constrained": judge.constrained,
            "verdict_first": judge.verdict_first,
        }
    result["timing"] = timing
    hooks.check("results")  # a stop asked during the last batch still stops
    return result


def _judge_progress(phase: str, hooks: Hooks) -> Callable[[int, int], None]:
    """Judge.compare's on_progress as hooks: the phase (with the judgments to make) at 0,
    progress after each batch, should_stop between batches."""

    def report(done: int, total: int) -> None:
        if done == 0:
            hooks.phase(phase, {"judgments": total})
        hooks.progress(phase, done, total, {})
        hooks.check(phase, {"judgments_done": done})

    return report
