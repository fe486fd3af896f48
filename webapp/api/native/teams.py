"""/api/teams: the key's team (a key belongs to one team; other teams are 404)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Router, Schema

from webapp.api.native.common import ERRORS, ListOut, caller_of, id_path
from webapp.api.v1.selectors import team_slug
from webapp.teams.access import get_for_user, role_of
from webapp.teams.models import Team

router = Router(tags=["teams"])


class TeamOut(Schema):
    id: int
    object: str = "team"
    name: str
    slug: str
    role: str | None
    members: int


def _out(team: Team, request: HttpRequest) -> TeamOut:
    caller = caller_of(request)
    return TeamOut(
        id=team.pk,
        name=team.name,
        slug=team_slug(team),
        role=role_of(caller.user, team),
        members=team.memberships.count(),
    )


def _team(request: HttpRequest, team_id: int) -> Team:
    caller = caller_of(request)
    # Only the key's own team; any other id is a 404 like an outsider's.
    return get_for_user(Team.objects.filter(pk=caller.team.pk), caller.user, team_id)


@router.get("", response={200: ListOut[TeamOut], **ERRORS}, summary="List the key's team")
def team_list(request: HttpRequest) -> ListOut[TeamOut]:
    caller = caller_of(request)
    return ListOut[TeamOut](data=[_out(_team(request, caller.team.pk), request)])


@router.get("/{team_id}", response={200: TeamOut, **ERRORS}, summary="Get a team")
def team_get(request: HttpRequest, team_id: int = id_path()) -> TeamOut:
    return _out(_team(request, team_id), request)
