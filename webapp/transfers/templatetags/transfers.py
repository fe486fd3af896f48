"""Template helpers for Trans-LoRA parts of the notebook and run pages (reads only)."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString

from webapp.datasets.models import DatasetVersion
from webapp.projects.models import Cell, CellRun
from webapp.transfers.charts import LABELS, accuracy_bars, paper_bar
from webapp.transfers.selectors import (
    adapter_moves,
    dataset_lineage,
    evaluation_lineage,
    run_lineage,
    transfer_source_status,
    transferable_state,
)

register = template.Library()


@register.simple_tag
def transferable_of(run: CellRun) -> dict[str, Any]:
    return transferable_state(run=run)


@register.simple_tag
def transfer_source_of(cell: Cell) -> dict[str, Any]:
    return transfer_source_status(cell=cell)


@register.simple_tag
def lineage_of(run: CellRun) -> list[dict[str, Any]]:
    return run_lineage(run=run)


@register.simple_tag
def evaluation_lineage_of(run: CellRun) -> list[list[dict[str, Any]]]:
    """An evaluation run's chains: each compared adapter's lineage, then the evaluation."""
    return evaluation_lineage(run=run)


@register.simple_tag
def version_lineage_of(version: DatasetVersion) -> list[dict[str, Any]]:
    """A dataset version's own lineage (where Tunebook made it from), for its page."""
    return dataset_lineage(version_id=version.pk) if version.origin else []


@register.simple_tag
def moves_of(run: CellRun) -> list[CellRun]:
    return adapter_moves(run=run) if run.cell.kind == "finetune" else []


@register.simple_tag
def accuracy_chart(accuracy: dict[str, Any]) -> SafeString:
    return accuracy_bars(accuracy or {})


@register.simple_tag
def paper_bar_of(accuracy: dict[str, Any]) -> dict[str, bool] | None:
    return paper_bar(accuracy or {})


@register.filter
def model_label(key: str) -> str:
    return LABELS.get(key, key)


@register.filter
def percent(value: float | str | None) -> str:
    # A missing key in a template resolves to "" rather than None.
    return "–" if value is None or value == "" else f"{100 * float(value):.1f}%"
