"""Reads for teams."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.http import Http404
from django.utils import timezone

from webapp.teams.access import visible_to
from webapp.teams.models import Invitation, Membership, Team


def team_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Team]:
    return visible_to(Team, user).order_by("-personal", "name")


def team_members(*, team: Team) -> QuerySet[Membership]:
    return team.memberships.select_related("user").order_by("role", "user__username")


def team_pending_invitations(*, team: Team) -> QuerySet[Invitation]:
    return team.invitations.filter(accepted_at__isnull=True)


def invitation_get_by_token(*, token: str) -> Invitation:
    """Invitations are reached by their secret token, not by team membership."""
    invitation = Invitation.objects.select_related("team").filter(token=token).first()
    if invitation is None:
        raise Http404("No such invitation")
    return invitation


def invitations_for_user(*, user: AbstractBaseUser) -> QuerySet[Invitation]:
    """Open invitations addressed to this user by username or e-mail, to teams they are not in."""
    addressed = Q(invitee__iexact=user.get_username())
    if email := getattr(user, "email", ""):
        addressed |= Q(invitee__iexact=email)
    return (
        Invitation.objects.filter(
            addressed, accepted_at__isnull=True, expires_at__gt=timezone.now()
        )
        .exclude(team__memberships__user=user)
        .select_related("team", "invited_by")
        .order_by("-created_at")
    )
