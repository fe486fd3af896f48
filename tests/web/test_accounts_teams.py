"""Sign-up, log-in, password change, teams and the invitation flow."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from tests.web.conftest import PASSWORD, client_for
from webapp.projects.models import Project
from webapp.teams.access import get_for_user
from webapp.teams.models import Invitation, Membership, Role, Team
from webapp.teams.services import invitation_accept, invitation_create


def test_signup_creates_user_with_personal_team(db) -> None:
    client = client_for(None)
    response = client.post(
        reverse("signup"),
        {
            "username": "nina",
            "email": "nina@example.com",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert response.status_code == 302 and response["Location"] == reverse("dashboard")
    user = User.objects.get(username="nina")
    team = Team.objects.get(memberships__user=user)
    assert team.personal and team.memberships.get().role == Role.OWNER
    assert "nina" in client.get(reverse("dashboard")).content.decode()


def test_signup_rejects_duplicate_email(owner) -> None:
    response = client_for(None).post(
        reverse("signup"),
        {
            "username": "other",
            "email": "OLGA@example.com",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()


def test_login_logout_and_password_change(owner) -> None:
    client = client_for(None)
    response = client.post(reverse("login"), {"username": "olga", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("dashboard")).status_code == 200
    new = "another-long-pass-42"
    response = client.post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("dashboard")).status_code == 302
    assert client.login(username="olga", password=new)


def test_team_create_view(owner) -> None:
    client = client_for(owner)
    response = client.post(reverse("team_new"), {"name": "Research"})
    team = Team.objects.get(name="Research")
    assert response["Location"] == reverse("team_detail", args=[team.pk])
    assert Membership.objects.get(team=team).user == owner


def test_access_helper_roles(team, personas, project) -> None:
    for name in ("owner", "editor", "viewer"):
        assert get_for_user(Project, personas[name], project.pk) == project
    assert get_for_user(Project.objects.all(), personas["editor"], project.pk, need="edit")
    with pytest.raises(PermissionDenied):
        get_for_user(Project, personas["viewer"], project.pk, need="edit")
    with pytest.raises(PermissionDenied):
        get_for_user(Team, personas["editor"], team.pk, need="own")
    with pytest.raises(Http404):
        get_for_user(Project, personas["outsider"], project.pk)
    with pytest.raises(Http404):
        get_for_user(Project, personas["owner"], "not-a-number")


def test_invitation_flow_by_username(team, owner, outsider) -> None:
    response = client_for(owner).post(
        reverse("team_invite", args=[team.pk]), {"invitee": "oscar", "role": "viewer"}, follow=True
    )
    invitation = Invitation.objects.get(team=team)
    link = reverse("invitation_accept", args=[invitation.token])
    assert link in response.content.decode()
    client = client_for(outsider)
    assert client.get(link).status_code == 200
    response = client.post(link)
    assert response["Location"] == reverse("team_detail", args=[team.pk])
    assert Membership.objects.get(team=team, user=outsider).role == Role.VIEWER
    # A used link cannot be replayed.
    client.post(link)
    assert Membership.objects.filter(team=team, user=outsider).count() == 1


def test_invitation_by_email_and_only_for_the_invitee(team, owner, outsider, db) -> None:
    invitation = invitation_create(team=team, invited_by=owner, invitee="OSCAR@example.com")
    stranger = User.objects.create_user("stranger", password=PASSWORD)
    link = reverse("invitation_accept", args=[invitation.token])
    assert client_for(stranger).post(link).status_code == 404
    assert not Membership.objects.filter(team=team, user=stranger).exists()
    assert client_for(outsider).post(link).status_code == 302
    assert Membership.objects.get(team=team, user=outsider).role == Role.EDITOR


def test_invitation_rules(team, owner, editor, outsider) -> None:
    with pytest.raises(ValidationError, match="already a member"):
        invitation_create(team=team, invited_by=owner, invitee="ed")
    personal = Team.objects.get(memberships__user=owner, personal=True)
    with pytest.raises(ValidationError, match="personal team"):
        invitation_create(team=personal, invited_by=owner, invitee="oscar")
    expired = invitation_create(team=team, invited_by=owner, invitee="oscar")
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=1))
    with pytest.raises(ValidationError, match="expired"):
        invitation_accept(invitation=expired, user=outsider)
    assert client_for(outsider).get(reverse("invitation_accept", args=["nope"])).status_code == 404
