"""Swap logic, bootstrap CIs, Bradley-Terry, agreement and kappa on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finetune_core.evaluate import (
    PairResult,
    bootstrap_ci,
    bradley_terry,
    combine,
    consistency_rate,
    judge_agreement,
    pair_summary,
    ranking,
)
from finetune_core.evaluate.judge import Judgment


def j(value: str | None, status: str = "ok") -> Judgment:
    return Judgment(value, status, "", "", 1, "pairwise@test")


@pytest.mark.parametrize(
    ("ab", "ba", "outcome", "flipped"),
    [
        (j("A"), j("B"), "a", False),  # a wins in both positions
        (j("B"), j("A"), "b", False),
        (j("tie"), j("tie"), "tie", False),
        (j("A"), j("A"), "tie", True),  # always the first answer: position bias
        (j("B"), j("B"), "tie", True),
        (j("A"), j("tie"), "tie", True),
        (j(None, "unparseable"), j("B"), "error", False),
        (j("A"), j(None, "timeout"), "error", False),
        (j("A"), j(None, "skipped_budget"), "skipped_budget", False),
        (j(None, "skipped_limit"), j(None, "error"), "skipped_limit", False),
    ],
)
def test_swap_combination(ab: Judgment, ba: Judgment, outcome: str, flipped: bool) -> None:
    assert combine(ab, ba) == (outcome, flipped)


def pr(item: str, a: str, b: str, outcome: str, flipped: bool = False, cat: str = "") -> PairResult:
    first = j("A") if not flipped else j("A")
    second = j({"a": "B", "b": "A", "tie": "tie"}.get(outcome)) if not flipped else j("A")
    if outcome in ("error",):
        first = j(None, "error")
    return PairResult(item, cat, a, b, outcome, flipped, "pairwise@test", first, second)


def test_pair_summary_counts_and_win_rate() -> None:
    results = [pr("1", "x", "y", "a"), pr("2", "x", "y", "a"), pr("3", "x", "y", "tie", True)]
    results += [pr("4", "x", "y", "b"), pr("5", "x", "y", "error")]
    (row,) = pair_summary(results, n_boot=200)
    assert (row["wins"], row["ties"], row["losses"], row["errors"], row["n"]) == (2, 1, 1, 1, 4)
    assert row["win_rate"] == pytest.approx((2 + 0.5) / 4)
    assert row["ci_low"] <= row["win_rate"] <= row["ci_high"]
    assert row["inconsistent"] == 1 and row["consistency"] == pytest.approx(3 / 4)
    assert consistency_rate(results)["rate"] == pytest.approx(3 / 4)


def test_bootstrap_is_seeded_and_covers() -> None:
    data = [1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 1.0]
    assert bootstrap_ci(data, seed=3) == bootstrap_ci(data, seed=3)
    assert bootstrap_ci(data, seed=3) != bootstrap_ci(data, seed=4)
    assert bootstrap_ci([])["value"] is None
    # Coverage sanity: the 95% interval holds the true mean in most repeated samples.
    rng = np.random.default_rng(0)
    hits = 0
    for rep in range(100):
        sample = rng.binomial(1, 0.7, 150).astype(float)
        ci = bootstrap_ci(sample, n_boot=300, seed=rep)
        hits += ci["low"] <= 0.7 <= ci["high"]
    assert 85 <= hits <= 100


def test_weighted_bootstrap_is_token_mean() -> None:
    ci = bootstrap_ci([1.0, 3.0], weights=[3, 1])
    assert ci["value"] == pytest.approx((1 * 3 + 3 * 1) / 4)


def test_bradley_terry_two_players() -> None:
    # A beats B 3 times out of 4: the MLE has p_A / p_B = 3.
    p = bradley_terry([("A", "B", 1.0)] * 3 + [("A", "B", 0.0)])
    assert p["A"] / p["B"] == pytest.approx(3.0, rel=1e-6)
    assert sum(p.values()) == pytest.approx(1.0)
    # Ties count half a win each way: 1 win + 2 ties = 2 wins of 3 -> ratio 2.
    p = bradley_terry([("A", "B", 1.0), ("A", "B", 0.5), ("B", "A", 0.5)])
    assert p["A"] / p["B"] == pytest.approx(2.0, rel=1e-6)


def test_bradley_terry_three_players_exact() -> None:
    # Win counts exactly as strengths 4:2:1 predict (P(i>j) = p_i/(p_i+p_j)):
    # A-B 4 of 6 (2/3), A-C 4 of 5 (4/5), B-C 2 of 3 (2/3). The likelihood
    # equations hold at 4:2:1, so that is the MLE.
    games = [("A", "B", 1.0)] * 4 + [("A", "B", 0.0)] * 2
    games += [("A", "C", 1.0)] * 4 + [("A", "C", 0.0)]
    games += [("B", "C", 1.0)] * 2 + [("B", "C", 0.0)]
    p = bradley_terry(games)
    assert [p["A"], p["B"], p["C"]] == pytest.approx([4 / 7, 2 / 7, 1 / 7], rel=1e-6)


def test_bradley_terry_pseudo_ties_keep_it_finite() -> None:
    p = bradley_terry([("A", "B", 1.0)] * 5, pseudo_ties=0.5)
    assert all(math.isfinite(v) and v > 0 for v in p.values()) and p["A"] > p["B"]


def test_ranking_orders_with_cis() -> None:
    results = []
    for i in range(12):
        results.append(pr(str(i), "strong", "mid", "a" if i % 4 else "b"))
        results.append(pr(str(i), "mid", "weak", "a" if i % 3 else "tie"))
        results.append(pr(str(i), "strong", "weak", "a"))
    rows = ranking(results, n_boot=100)
    assert [r["candidate"] for r in rows] == ["strong", "mid", "weak"]
    assert all(r["ci_low"] <= r["strength"] <= r["ci_high"] for r in rows)


def test_agreement_and_kappa_hand_computed() -> None:
    judge = ["a", "a", "b", "tie", "b", "a", "tie", "b"]
    human = ["a", "a", "b", "a", "tie", "b", "tie", "b"]
    jv = {(str(i), "x", "y"): v for i, v in enumerate(judge)}
    # Human votes given in the other orientation are flipped back.
    flip = {"a": "b", "b": "a", "tie": "tie"}
    hv = {(str(i), "y", "x"): flip[v] for i, v in enumerate(human)}
    got = judge_agreement(jv, hv)
    # agreement 5/8; chance (3*3 + 3*3 + 2*2) / 64 = 22/64; kappa = (5/8 - 22/64) / (42/64) = 3/7
    assert got["n"] == 8 and got["agreement"] == pytest.approx(5 / 8)
    assert got["kappa"] == pytest.approx(3 / 7)
    # Without ties: items 0, 1, 2, 5, 7 remain, 4 of 5 agree.
    assert got["n_without_ties"] == 5 and got["agreement_without_ties"] == pytest.approx(0.8)
    assert judge_agreement(jv, {})["n"] == 0
