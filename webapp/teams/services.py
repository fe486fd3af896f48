"""Writes for teams, memberships and invitations."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from webapp.teams.models import Invitation, Membership, Role, Team

INVITATION_LIFETIME = timedelta(days=14)


@transaction.atomic
def team_create(*, name: str, owner: AbstractBaseUser, personal: bool = False) -> Team:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "A team needs a name."})
    team = Team.objects.create(name=name[:100], personal=personal)
    Membership.objects.create(team=team, user=owner, role=Role.OWNER)
    return team


def invitation_create(
    *, team: Team, invited_by: AbstractBaseUser, invitee: str, role: str = Role.EDITOR
) -> Invitation:
    invitee = invitee.strip()
    if not invitee:
        raise ValidationError({"invitee": "Enter a username or an e-mail address."})
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})
    if team.personal:
        raise ValidationError({"invitee": "A personal team cannot have other members."})
    User = get_user_model()
    existing = User.objects.filter(username__iexact=invitee) | User.objects.filter(
        email__iexact=invitee
    )
    if Membership.objects.filter(team=team, user__in=existing).exists():
        raise ValidationError({"invitee": f"{invitee} is already a member of {team.name}."})
    return Invitation.objects.create(
        team=team,
        invitee=invitee,
        role=role,
        token=secrets.token_urlsafe(32),
        invited_by=invited_by,
        expires_at=timezone.now() + INVITATION_LIFETIME,
    )


def invitation_matches(*, invitation: Invitation, user: AbstractBaseUser) -> bool:
    """Only the invited person may use the link, not whoever else got hold of it."""
    wanted = invitation.invitee.casefold()
    email = (getattr(user, "email", "") or "").casefold()
    return user.get_username().casefold() == wanted or (bool(email) and email == wanted)


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: AbstractBaseUser) -> Membership:
    # Lock the row so a double submit cannot create two memberships.
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if not invitation_matches(invitation=invitation, user=user):
        raise ValidationError("This invitation is for someone else.")
    if invitation.accepted_at is not None:
        raise ValidationError("This invitation has already been used.")
    if invitation.expires_at < timezone.now():
        raise ValidationError("This invitation has expired; ask for a new one.")
    membership, _ = Membership.objects.get_or_create(
        team=invitation.team, user=user, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    return membership


def _locked_membership(membership: Membership) -> Membership:
    """Lock the team's row first: membership changes of one team run one at a time, so two
    owners cannot demote each other at once and leave the team without one."""
    Team.objects.select_for_update().filter(pk=membership.team_id).first()
    current = Membership.objects.select_related("team", "user").filter(pk=membership.pk).first()
    if current is None:
        raise ValidationError(f"{membership.user} is no longer a member of {membership.team}.")
    return current


def _refuse_losing_last_owner(membership: Membership, action: str) -> None:
    if membership.role != Role.OWNER:
        return
    if membership.team.memberships.filter(role=Role.OWNER).count() <= 1:
        raise ValidationError(
            f"{membership.user} is the last owner of {membership.team.name}; "
            f"make another member an owner before you {action}."
        )


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    """Remove a member. Their API keys for the team are revoked, so re-inviting them later
    does not bring old keys back; the jobs they started keep running for the team."""
    membership = _locked_membership(membership)
    _refuse_losing_last_owner(membership, "remove them")
    membership.team.api_keys.filter(created_by=membership.user, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    membership.delete()


@transaction.atomic
def membership_role_change(*, membership: Membership, role: str) -> Membership:
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})
    membership = _locked_membership(membership)
    if role != Role.OWNER:
        _refuse_losing_last_owner(membership, "change their role")
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def invitation_revoke(*, invitation: Invitation) -> None:
    """Delete a pending invitation: its link stops working at once."""
    invitation = Invitation.objects.select_for_update().filter(pk=invitation.pk).first()
    if invitation is None:
        raise ValidationError("This invitation was already revoked.")
    if invitation.accepted_at is not None:
        raise ValidationError(
            f"{invitation.invitee} already accepted this invitation; remove the member instead."
        )
    invitation.delete()
