"""Calls into finetune_core. Imported only by workers.tasks; finetune_core (and torch behind
it) is imported inside each function, so merely loading the task module stays cheap."""

from __future__ import annotations

from typing import Any


def validate_dataset_file(path: str, *, fmt: str | None = None) -> dict[str, Any]:
    from finetune_core.data import validate_file

    report = validate_file(path, fmt=fmt or None)
    result = dict(report.to_dict())
    result.setdefault("ok", bool(report.ok))
    result.setdefault("n_examples", report.n_examples)
    result.setdefault("format", report.format)
    return result


def run_cell(kind: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run one notebook cell; returns its outputs. Kinds are wired here as finetune_core grows."""
    raise NotImplementedError(f"Running {kind} cells is not available yet.")
