"""{% team_datasets team can_edit %}: the team page's datasets card (the team page is
teams', which sits below datasets and so names none of its parts); `stats|pair_parts`:
a preference file's prompt and answer token counts for its report."""

from __future__ import annotations

from typing import Any

from django import template

from webapp.datasets.selectors import dataset_list_for_team
from webapp.teams.models import Team

register = template.Library()


@register.inclusion_tag("datasets/_team_datasets.html")
def team_datasets(team: Team, can_edit: bool) -> dict[str, Any]:
    return {"team": team, "can_edit": can_edit, "datasets": dataset_list_for_team(team=team)}


# A preference file's statistics keys (the engine's, or the worker's estimate), as shown.
PAIR_PARTS = (
    ("prompt_tokens", "Prompt tokens"),
    ("chosen_tokens", "Preferred answer tokens"),
    ("rejected_tokens", "Non-preferred answer tokens"),
)


@register.filter
def pair_parts(stats: Any) -> list[tuple[str, dict[str, Any]]]:
    """(label, distribution) of a preference file's prompt and answers; [] for other data."""
    if not isinstance(stats, dict):
        return []
    return [(label, stats[key]) for key, label in PAIR_PARTS if stats.get(key)]
