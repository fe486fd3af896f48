"""{% team_datasets team can_edit %}: the team page's datasets card (the team page is
teams', which sits below datasets and so names none of its parts)."""

from __future__ import annotations

from typing import Any

from django import template

from webapp.datasets.selectors import dataset_list_for_team
from webapp.teams.models import Team

register = template.Library()


@register.inclusion_tag("datasets/_team_datasets.html")
def team_datasets(team: Team, can_edit: bool) -> dict[str, Any]:
    return {"team": team, "can_edit": can_edit, "datasets": dataset_list_for_team(team=team)}
