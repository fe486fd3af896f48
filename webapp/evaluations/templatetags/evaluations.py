"""Template helpers for evaluation cells: the inline summary of the latest result."""

from __future__ import annotations

from typing import Any

from django import template

from webapp.evaluations import selectors
from webapp.evaluations.charts import ci_chart
from webapp.evaluations.models import Evaluation
from webapp.evaluations.preference import sources_text
from webapp.projects.models import CellRun

register = template.Library()


def summary_context(ev: Evaluation | None) -> dict[str, Any]:
    if ev is None:
        return {"ev": None}
    board = selectors.leaderboard(evaluation=ev)
    return {
        "ev": ev,
        "chart": ci_chart(board),
        "pairs": ev.summary.get("pairs", []),
        "exact_match": selectors.exact_match_rows(ev.summary or {}),
        "proposal": ev.summary.get("proposal"),
        "consistency": selectors.consistency(evaluation=ev),
        "agreement": selectors.agreement(evaluation=ev),
    }


@register.inclusion_tag("evaluations/_summary.html", takes_context=True)
def evaluation_block(context: Any, ev: Evaluation) -> dict[str, Any]:
    """One evaluation's summary (the run page)."""
    out = summary_context(ev)
    return {**out, "can_edit": context.get("can_edit"), "csrf_token": context.get("csrf_token")}


@register.simple_tag
def evaluation_of(run: CellRun) -> Evaluation | None:
    return Evaluation.objects.filter(run=run).first()


@register.simple_tag
def checkpoint_proposal(run: CellRun) -> dict[str, Any] | None:
    """The newest "best checkpoint by judge" proposal for a fine-tune run, if any."""
    ev = (
        Evaluation.objects.filter(summary__proposal__run_id=run.pk, run__status="succeeded")
        .order_by("-pk")
        .first()
    )
    return {**ev.summary["proposal"], "evaluation": ev.pk} if ev else None


@register.simple_tag
def team_judges(team: Any) -> list[Any]:
    return list(selectors.team_backends(team=team))


@register.filter
def pct(value: float | None) -> str:
    if not isinstance(value, int | float):  # None, or a missing variable ("")
        return "–"
    return f"{100 * value:.0f}%"


@register.filter
def preference_sources(origin: dict[str, Any]) -> str:
    """Where a preference dataset version's pairs came from, as its origin records it."""
    return sources_text(origin.get("by_source") or {}, bool(origin.get("calibrated")))
