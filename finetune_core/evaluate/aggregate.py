"""Aggregate judgments: W/T/L and win rate per pair, Bradley-Terry ranking, per-category
tables, consistency under swap, and judge-human agreement (Cohen's kappa)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from finetune_core.evaluate.judge import SKIPPED, GradeResult, PairResult
from finetune_core.evaluate.stats import bootstrap_ci


def consistency_rate(results: Iterable[PairResult]) -> dict[str, Any]:
    """Share of pairs whose verdict survived swapping the order (both orders parsed)."""
    both = [r for r in results if r.ab.status == "ok" and r.ba.status == "ok"]
    consistent = sum(not r.inconsistent for r in both)
    return {
        "rate": consistent / len(both) if both else None,
        "n": len(both),
        "consistent": consistent,
    }


def pair_summary(
    results: Sequence[PairResult], n_boot: int = 1000, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per (a, b): wins/ties/losses of a, errors, skips, adjusted win rate + 95% CI."""
    groups: dict[tuple[str, str], list[PairResult]] = defaultdict(list)
    for r in results:
        groups[(r.a, r.b)].append(r)
    rows = []
    for (a, b), rs in groups.items():
        count = Counter(r.outcome for r in rs)
        scores = [s for r in rs if (s := r.score_a) is not None]
        ci = bootstrap_ci(scores, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "a": a,
                "b": b,
                "wins": count["a"],
                "ties": count["tie"],
                "losses": count["b"],
                "errors": count["error"],
                "skipped": sum(count[s] for s in SKIPPED),
                "n": len(scores),
                "win_rate": ci["value"],
                "ci_low": ci["low"],
                "ci_high": ci["high"],
                "inconsistent": sum(r.inconsistent for r in rs),
                "consistency": consistency_rate(rs)["rate"],
            }
        )
    return rows


def calibrated_pair_summary(
    results: Sequence[PairResult], n_boot: int = 1000, seed: int = 0
) -> list[dict[str, Any]]:
    """pair_summary on the position-calibrated outcomes (constrained judges only)."""
    moved = [replace(r, outcome=r.calibrated, inconsistent=False) for r in results if r.calibrated]
    return pair_summary(moved, n_boot, seed)


def by_category(
    results: Sequence[PairResult], n_boot: int = 1000, seed: int = 0
) -> dict[str, list]:
    cats: dict[str, list[PairResult]] = defaultdict(list)
    for r in results:
        cats[r.category or "(none)"].append(r)
    return {c: pair_summary(rs, n_boot, seed) for c, rs in sorted(cats.items())}


def bradley_terry(
    comparisons: Iterable[tuple[str, str, float]],
    players: Sequence[str] | None = None,
    *,
    pseudo_ties: float = 0.0,
    iters: int = 10_000,
    tol: float = 1e-12,
) -> dict[str, float]:
    """Strengths p (summing to 1) with P(i beats j) = p_i / (p_i + p_j).

    comparisons: (i, j, score of i) with score 1, 0.5 (tie: half a win each way) or 0.
    Fitted by Hunter's MM algorithm: p_i <- W_i / sum_j n_ij / (p_i + p_j).
    pseudo_ties adds that many virtual tied games to every pair, which keeps the
    estimate finite when a player never wins or never loses.
    """
    comps = list(comparisons)
    names = list(players) if players else sorted({p for i, j, _ in comps for p in (i, j)})
    idx = {p: k for k, p in enumerate(names)}
    k = len(names)
    wins = np.zeros(k)
    games = np.full((k, k), 0.0)
    for i, j, s in comps:
        a, b = idx[i], idx[j]
        wins[a] += s
        wins[b] += 1 - s
        games[a, b] += 1
        games[b, a] += 1
    if pseudo_ties:
        games += pseudo_ties * (1 - np.eye(k))
        wins += pseudo_ties * (k - 1) / 2
    p = np.full(k, 1.0 / k)
    for _ in range(iters):
        denom = (games / np.maximum(p[:, None] + p[None, :], 1e-300)).sum(axis=1)
        new = np.where(denom > 0, wins / np.maximum(denom, 1e-300), p)
        new /= new.sum()
        if np.max(np.abs(new - p)) < tol:
            p = new
            break
        p = new
    return {n: float(p[idx[n]]) for n in names}


def ranking(
    results: Sequence[PairResult], *, n_boot: int = 200, seed: int = 0, pseudo_ties: float = 0.1
) -> list[dict[str, Any]]:
    """Bradley-Terry ranking with bootstrap CIs (items are resampled with all their pairs)."""
    scored = [r for r in results if r.score_a is not None]
    players = sorted({p for r in results for p in (r.a, r.b)})
    if not scored or len(players) < 2:
        return []

    def fit(rs: Iterable[PairResult]) -> dict[str, float]:
        comps = [(r.a, r.b, r.score_a) for r in rs]
        return bradley_terry(comps, players, pseudo_ties=pseudo_ties)  # type: ignore[arg-type]

    point = fit(scored)
    by_item: dict[str, list[PairResult]] = defaultdict(list)
    for r in scored:
        by_item[r.item_id].append(r)
    groups = list(by_item.values())
    rng = np.random.default_rng(seed)
    draws = defaultdict(list)
    for _ in range(n_boot):
        sample = [r for g in rng.integers(0, len(groups), len(groups)) for r in groups[g]]
        for name, value in fit(sample).items():
            draws[name].append(value)
    rows = [
        {
            "candidate": n,
            "strength": point[n],
            "ci_low": float(np.quantile(draws[n], 0.025)),
            "ci_high": float(np.quantile(draws[n], 0.975)),
        }
        for n in players
    ]
    rows.sort(key=lambda r: -r["strength"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def _oriented(votes: Mapping[tuple[str, str, str], Any]) -> dict[tuple[str, str, str], list[str]]:
    """Votes keyed (item, a, b) with a < b, flipping "a"/"b" when the key was reversed."""
    flip = {"a": "b", "b": "a", "tie": "tie"}
    out: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for (item, a, b), vote in votes.items():
        for v in [vote] if isinstance(vote, str) else list(vote):
            if a <= b:
                out[(item, a, b)].append(v)
            else:
                out[(item, b, a)].append(flip[v])
    return out


def judge_agreement(
    judge_votes: Mapping[tuple[str, str, str], str],
    human_votes: Mapping[tuple[str, str, str], str | Sequence[str]],
) -> dict[str, Any]:
    """Percent agreement with and without ties, and Cohen's kappa over {a, b, tie}.

    Keys are (item id, candidate a, candidate b); votes "a", "b" or "tie". A key may
    hold several human votes; each is one comparison, as in MT-Bench's agreement.
    """
    judge, human = _oriented(judge_votes), _oriented(human_votes)
    pairs = [(judge[k][0], h) for k in human if k in judge for h in human[k]]
    if not pairs:
        return {
            "n": 0,
            "agreement": None,
            "n_without_ties": 0,
            "agreement_without_ties": None,
            "kappa": None,
        }
    agree = sum(j == h for j, h in pairs) / len(pairs)
    no_ties = [(j, h) for j, h in pairs if j != "tie" and h != "tie"]
    labels = ("a", "b", "tie")
    pj = Counter(j for j, _ in pairs)
    ph = Counter(h for _, h in pairs)
    expected = sum(pj[c] * ph[c] for c in labels) / len(pairs) ** 2
    kappa = (agree - expected) / (1 - expected) if expected < 1 else 1.0
    return {
        "n": len(pairs),
        "agreement": agree,
        "n_without_ties": len(no_ties),
        "agreement_without_ties": sum(j == h for j, h in no_ties) / len(no_ties)
        if no_ties
        else None,
        "kappa": kappa,
    }


def judge_votes(results: Iterable[PairResult]) -> dict[tuple[str, str, str], str]:
    """The judge's decided outcomes in the shape judge_agreement takes."""
    return {(r.item_id, r.a, r.b): r.outcome for r in results if r.score_a is not None}


def grade_summary(
    grades: Iterable[GradeResult], n_boot: int = 1000, seed: int = 0
) -> list[dict[str, Any]]:
    """Mean 1-10 rating per candidate with a bootstrap 95% CI; errors counted, not averaged."""
    by: dict[str, list[GradeResult]] = defaultdict(list)
    for g in grades:
        by[g.candidate].append(g)
    rows = []
    for name, gs in by.items():
        ci = bootstrap_ci([g.rating for g in gs if g.rating is not None], n_boot=n_boot, seed=seed)
        rows.append(
            {
                "candidate": name,
                "mean_rating": ci["value"],
                "ci_low": ci["low"],
                "ci_high": ci["high"],
                "n": ci["n"],
                "errors": sum(g.status not in ("ok", *SKIPPED) for g in gs),
                "skipped": sum(g.status in SKIPPED for g in gs),
            }
        )
    return rows
