"""Bootstrap confidence intervals (percentile method, seeded)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float],
    *,
    statistic: Callable[[np.ndarray], float] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    weights: Sequence[float] | None = None,
) -> dict[str, float | None]:
    """{"value", "low", "high", "n"}: the statistic and its percentile bootstrap interval.

    With weights the statistic is the weighted mean (e.g. loss per token over examples
    of different lengths), resampling examples with their weights.
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return {"value": None, "low": None, "high": None, "n": 0}
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)

    def stat(idx: np.ndarray) -> float:
        if statistic is not None:
            return float(statistic(x[idx]))
        return float(np.sum(x[idx] * w[idx]) / max(np.sum(w[idx]), 1e-12))

    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    alpha = (1 - level) / 2
    return {
        "value": stat(np.arange(n)),
        "low": float(np.quantile(draws, alpha)),
        "high": float(np.quantile(draws, 1 - alpha)),
        "n": n,
    }
