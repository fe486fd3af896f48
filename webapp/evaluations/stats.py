"""Judge-human agreement and swap consistency, computed in the web process.

Human votes change after a run, so these are computed on each view; the worker's
aggregates (win rates, Bradley-Terry) do not depend on votes and are stored with the run.
Same definitions as finetune_core.evaluate.aggregate (which the web never imports):
each human vote is one comparison with the judge's decided outcome, as in MT-Bench.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

LABELS = ("a", "b", "tie")


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa over {a, b, tie} for (judge, human) pairs; None without pairs."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(j == h for j, h in pairs) / n
    pj, ph = Counter(j for j, _ in pairs), Counter(h for _, h in pairs)
    expected = sum(pj[c] * ph[c] for c in LABELS) / n**2
    # Both raters always said the same one label: chance agreement is total, call it 1.
    return (observed - expected) / (1 - expected) if expected < 1 else 1.0


def agreement(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Percent agreement with and without ties (pairs where either side said tie dropped)."""
    no_ties = [(j, h) for j, h in pairs if j != "tie" and h != "tie"]
    return {
        "n": len(pairs),
        "agreement": sum(j == h for j, h in pairs) / len(pairs) if pairs else None,
        "n_without_ties": len(no_ties),
        "agreement_without_ties": (
            sum(j == h for j, h in no_ties) / len(no_ties) if no_ties else None
        ),
        "kappa": cohen_kappa(pairs),
    }


def consistency(verdicts: Iterable[tuple[str, str, bool]]) -> dict[str, Any]:
    """(ab status, ba status, inconsistent): share of both-parsed pairs that survived a swap."""
    both = [flag for ab, ba, flag in verdicts if ab == "ok" and ba == "ok"]
    kept = sum(not flag for flag in both)
    return {"n": len(both), "consistent": kept, "rate": kept / len(both) if both else None}
