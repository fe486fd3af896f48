"""Reads for projects and notebooks."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from webapp.projects.models import Cell, CellRun, Project
from webapp.teams.models import Team


def project_list_for_team(*, team: Team) -> QuerySet[Project]:
    return team.projects.all()


def notebook_cells(*, project: Project) -> QuerySet[Cell]:
    """Cells in order, each with its runs newest first (all versions are kept)."""
    runs = CellRun.objects.order_by("-version")
    return project.cells.order_by("position", "id").prefetch_related(
        Prefetch("runs", queryset=runs)
    )
