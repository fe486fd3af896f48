"""{% cell_live cell %}: a runnable cell's live part on the notebook page;
{% team_notebooks team can_edit %}: the team page's notebooks card."""

from __future__ import annotations

from typing import Any

from django import template

from webapp.projects.forms import ProjectForm
from webapp.projects.live_views import TEMPLATE, cell_live_context
from webapp.projects.models import Cell
from webapp.projects.selectors import project_list_for_team
from webapp.teams.models import Team

register = template.Library()


@register.inclusion_tag(TEMPLATE, takes_context=True)
def cell_live(context: Any, cell: Cell) -> dict[str, Any]:
    return {**cell_live_context(context["request"], cell), "csrf_token": context.get("csrf_token")}


@register.inclusion_tag("projects/_team_notebooks.html", takes_context=True)
def team_notebooks(context: Any, team: Team, can_edit: bool) -> dict[str, Any]:
    return {
        "team": team,
        "can_edit": can_edit,
        "projects": project_list_for_team(team=team),
        "project_form": ProjectForm(),
        "csrf_token": context.get("csrf_token"),
    }
