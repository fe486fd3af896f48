"""A notebook cell's live part: its latest run (status, progress, outputs) and its runs.

The notebook renders it per runnable cell ({% cell_live cell %}); while a run of the cell is
queued or running, the fragment polls `cell_live` every 2 s and replaces itself, and once
every run is settled it comes back without the trigger, so htmx stops polling.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from webapp.projects.cell_kinds import REGISTRY
from webapp.projects.models import Cell
from webapp.projects.run_lifecycle import LIVE
from webapp.projects.run_views import run_context
from webapp.teams.access import get_for_user, role_of
from webapp.teams.models import ROLE_CAN

TEMPLATE = "projects/_cell_live.html"


def cell_live_context(request: HttpRequest, cell: Cell) -> dict[str, Any]:
    """The run page's context for the cell's latest run, plus the cell's runs newest first."""
    runs = list(cell.runs.all())
    latest = runs[0] if runs else None
    project = cell.project
    context = run_context(request, latest) if latest else {
        "cell": cell,
        "spec": REGISTRY.get(cell.kind),
        "project": project,
        "team": project.team,
        "can_edit": role_of(request.user, project.team) in ROLE_CAN["edit"],
    }  # fmt: skip
    return {
        **context,
        "cell": cell,
        "runs": runs,
        "latest": latest,
        "live": any(r.status in LIVE for r in runs),
        "request": request,
    }


def cell_live_response(request: HttpRequest, cell: Cell) -> HttpResponse:
    """The fragment, with the messages of this request (a Run's "queued", or why not) in it."""
    context = {**cell_live_context(request, cell), "notes": list(messages.get_messages(request))}
    return render(request, TEMPLATE, context)


@login_required
@require_GET
def cell_live(request: HttpRequest, cell_id: int) -> HttpResponse:
    cell = get_for_user(Cell.objects.select_related("project__team"), request.user, cell_id)
    return render(request, TEMPLATE, cell_live_context(request, cell))
