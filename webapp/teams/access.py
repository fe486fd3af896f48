"""The one access helper. Every view fetches objects through get_for_user.

Outsiders get 404 (they must not learn the object exists); members whose role is
too weak get 403.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import Http404

from webapp.teams.models import ROLE_CAN, Membership, Team

Need = Literal["view", "edit", "own"]
M = TypeVar("M", bound=models.Model)


def _team_path(model: type[models.Model]) -> str:
    path = getattr(model, "TEAM_PATH", None)
    if path is None:
        raise TypeError(
            f"{model.__name__} has no TEAM_PATH; it cannot go through the access helper"
        )
    return path


def team_of(obj: models.Model) -> Team:
    """Follow TEAM_PATH from obj to its Team."""
    path = _team_path(type(obj))
    current: object = obj
    for attr in filter(None, path.split("__")):
        current = getattr(current, attr)
    assert isinstance(current, Team)
    return current


def role_of(user: AbstractBaseUser | AnonymousUser, team: Team) -> str | None:
    """The user's role in the team, or None for outsiders and anonymous users."""
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(team=team, user_id=user.pk).values_list("role", flat=True).first()
    )


def visible_to(
    model_or_qs: type[M] | models.QuerySet[M], user: AbstractBaseUser | AnonymousUser
) -> models.QuerySet[M]:
    """Rows of a team-owned model whose team the user belongs to."""
    qs = (
        model_or_qs
        if isinstance(model_or_qs, models.QuerySet)
        else model_or_qs._default_manager.all()
    )
    if not user.is_authenticated:
        return qs.none()
    path = _team_path(qs.model)
    prefix = f"{path}__" if path else ""
    return qs.filter(**{f"{prefix}memberships__user_id": user.pk})


def get_for_user(
    model_or_qs: type[M] | models.QuerySet[M],
    user: AbstractBaseUser | AnonymousUser,
    pk: object,
    *,
    need: Need = "view",
) -> M:
    """Fetch one object for user: Http404 unless a member, PermissionDenied if role < need."""
    try:
        obj = visible_to(model_or_qs, user).get(pk=pk)
    except (models.ObjectDoesNotExist, ValueError, TypeError):
        raise Http404("No such object") from None
    if need != "view" and role_of(user, team_of(obj)) not in ROLE_CAN[need]:
        raise PermissionDenied(f"Your role in this team does not allow this ({need}).")
    return obj
