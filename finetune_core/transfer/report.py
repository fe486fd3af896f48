"""Evaluation for the transfer report: greedy answers, normalised exact match against
any accepted reference, a bootstrap 95% interval, and the printed table."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from finetune_core.data import Example
from finetune_core.transfer.seeds import exact_match, references_of

if TYPE_CHECKING:
    from finetune_core.infer import ChatModel


def bootstrap(values: Sequence[float], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean with a percentile bootstrap 95% interval (seeded)."""
    n = len(values)
    if not n:
        return {"accuracy": None, "low": None, "high": None, "n": 0}
    rng = random.Random(seed)
    draws = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return {
        "accuracy": sum(values) / n,
        "low": draws[int(0.025 * n_boot)],
        "high": draws[min(int(0.975 * n_boot), n_boot - 1)],
        "n": n,
    }


def prompt_of(example: Example) -> list[dict[str, str]]:
    """The conversation up to (not including) the first assistant answer."""
    out = []
    for m in example.messages:
        if m.role == "assistant":
            break
        out.append({"role": m.role, "content": m.content})
    return out


def evaluate_chat(
    chat: ChatModel,
    examples: Sequence[Example],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    samples: int = 3,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Exact-match accuracy of greedy answers, with a few (prompt, answer, ok) samples."""
    from finetune_core.infer import generate

    scored = [e for e in examples if references_of(e)]
    if on_batch is not None:
        on_batch(0, len(scored))
    hits: list[float] = []
    shown = []
    for start in range(0, len(scored), batch_size):
        batch = scored[start : start + batch_size]
        answers = generate(chat, [prompt_of(e) for e in batch], max_new_tokens=max_new_tokens)
        for example, answer in zip(batch, answers, strict=True):
            ok = exact_match(answer.text, references_of(example))
            hits.append(float(ok))
            if len(shown) < samples:
                shown.append({"answer": answer.text, "references": list(references_of(example))})
        if on_batch is not None:
            on_batch(len(hits), len(scored))
    return {**bootstrap(hits), "samples": shown}


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'model':34} {'exact match':>11} {'95% CI':>17} {'n':>5}"]
    for name, r in report["accuracy"].items():
        ci = f"[{_pct(r['low'])}, {_pct(r['high'])}]" if r["low"] is not None else ""
        lines.append(f"{name:34} {_pct(r['accuracy']):>11} {ci:>17} {r['n']:>5}")
    s = report["synthesis"]
    lines.append(
        f"synthetic inputs: {s['accepted']} accepted of {s['attempts']} sampled "
        f"(acceptance {100 * s['acceptance_rate']:.1f}%, filtered: {s['filtered']}); "
        f"distillation pairs: {report['distillation_pairs']}"
    )
    lines.append(
        "phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in report["phase_seconds"].items())
    )
    return "\n".join(lines)
