"""The Export panel of a run page, for the projects templates (reads only)."""

from __future__ import annotations

from typing import Any

from django import template

from webapp.exports.selectors import export_panel
from webapp.projects.models import CellRun

register = template.Library()


@register.simple_tag
def export_panel_of(run: CellRun) -> dict[str, Any]:
    return export_panel(run=run)


@register.filter
def share(value: float | str | None) -> str:
    """0.875 -> "87.5%"."""
    return "–" if value is None or value == "" else f"{100 * float(value):.1f}%"
