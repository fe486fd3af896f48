"""Agreement, Cohen's kappa and swap consistency, by hand and against finetune_core's own
definitions (the web process computes them itself because it never imports the engine)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.evaluations.charts import ci_chart
from webapp.evaluations.stats import agreement, cohen_kappa, consistency


def test_kappa_by_hand() -> None:
    # judge a,a,b,b,tie ; human a,b,b,b,a -> observed 3/5; judge marginals a2 b2 t1,
    # human a2 b3 t0 -> expected (2*2 + 2*3 + 1*0)/25 = 10/25; kappa = (0.6-0.4)/0.6 = 1/3
    pairs = [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b"), ("tie", "a")]
    assert cohen_kappa(pairs) == pytest.approx(1 / 3)
    out = agreement(pairs)
    assert out["agreement"] == pytest.approx(0.6)
    assert out["n_without_ties"] == 4 and out["agreement_without_ties"] == pytest.approx(0.75)


def test_kappa_edge_cases() -> None:
    assert cohen_kappa([]) is None
    assert cohen_kappa([("a", "a"), ("a", "a")]) == 1.0  # one label only: perfect
    assert cohen_kappa([("a", "b"), ("b", "a")]) == pytest.approx(-1.0)
    assert agreement([("tie", "tie")])["agreement_without_ties"] is None


def test_consistency_counts_only_pairs_parsed_in_both_orders() -> None:
    rows = [("ok", "ok", False), ("ok", "ok", True), ("ok", "unparseable", False)]
    assert consistency(rows) == {"n": 2, "consistent": 1, "rate": 0.5}
    assert consistency([])["rate"] is None


votes = st.sampled_from(["a", "b", "tie"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(votes, votes), min_size=1, max_size=30))
def test_matches_finetune_core_definitions(pairs: list[tuple[str, str]]) -> None:
    from finetune_core.evaluate.aggregate import judge_agreement

    judge = {(str(i), "x", "y"): j for i, (j, _) in enumerate(pairs)}
    human = {(str(i), "x", "y"): h for i, (_, h) in enumerate(pairs)}
    theirs, ours = judge_agreement(judge, human), agreement(pairs)
    for key in ("n", "agreement", "n_without_ties", "agreement_without_ties", "kappa"):
        assert (
            ours[key] == pytest.approx(theirs[key])
            if theirs[key] is not None
            else ours[key] is None
        )


def test_ci_chart_draws_a_bar_and_whiskers_per_row_and_escapes_labels() -> None:
    svg = str(
        ci_chart(
            [
                {
                    "label": "<tuned>",
                    "value": 0.7,
                    "ci_low": 0.5,
                    "ci_high": 0.9,
                    "scale": "win rate",
                },
                {"label": "base", "value": 0.3, "ci_low": 0.1, "ci_high": 0.5, "scale": "win rate"},
            ]
        )
    )
    assert svg.count("<rect") == 2 and svg.count('class="ci"') == 6
    assert "&lt;tuned&gt;" in svg and "<tuned>" not in svg
    assert "No judged results" in str(ci_chart([]))
