"""Owners remove members, change roles and revoke invitations (issue 20, item 7).

A removed member loses the team at once: pages, the API keys they made for it. The jobs
they started keep running for the team.
"""

from __future__ import annotations

import os
import threading

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from tests.web.conftest import client_for
from webapp.api.keys import api_key_create
from webapp.api.models import ApiKey
from webapp.jobs.models import JobStatus
from webapp.jobs.services import job_progress, job_start, job_succeed
from webapp.projects.models import CellRun
from webapp.teams.models import Invitation, Membership, Role, Team
from webapp.teams.services import (
    invitation_accept,
    invitation_create,
    invitation_revoke,
    membership_remove,
    membership_role_change,
)

HTMX = {"HTTP_HX_REQUEST": "true"}


def _membership(team: Team, user: User) -> Membership:
    return Membership.objects.get(team=team, user=user)


def _remove(client: Client, membership: Membership, **extra: str):
    return client.post(reverse("membership_remove", args=[membership.pk]), **extra)


def _api_status(key: str) -> tuple[int, str]:
    response = Client().get(reverse("api_files"), HTTP_AUTHORIZATION=f"Bearer {key}")
    return response.status_code, response.content.decode()


def test_removed_member_loses_the_team_in_the_session_they_are_logged_in_with(
    team, owner, editor, project, dataset_version
) -> None:
    pages = [
        reverse("team_detail", args=[team.pk]),
        reverse("project_detail", args=[project.pk]),
        reverse("dataset_detail", args=[dataset_version.dataset_id]),
        reverse("job_detail", args=[dataset_version.validation_job.pk]),
    ]
    session = client_for(editor)
    assert [session.get(page).status_code for page in pages] == [200] * 4
    response = _remove(client_for(owner), _membership(team, editor), follow=True)
    assert "ed is no longer a member of Lab." in response.content.decode()
    assert [session.get(page).status_code for page in pages] == [404] * 4
    assert "Lab" not in session.get(reverse("dashboard")).content.decode()


def test_removed_members_api_keys_stop_working_and_stay_revoked(team, owner, editor) -> None:
    key_row, key = api_key_create(team=team, created_by=editor, name="laptop")
    assert _api_status(key)[0] == 200
    membership_remove(membership=_membership(team, editor))
    status, body = _api_status(key)
    assert status == 401 and "revoked" in body
    assert ApiKey.objects.get(pk=key_row.pk).revoked_at is not None
    # Invited back, they start over: the old key does not come back to life.
    invitation = invitation_create(team=team, invited_by=owner, invitee="ed")
    invitation_accept(invitation=invitation, user=editor)
    assert _api_status(key)[0] == 401
    # Other members' keys are untouched.
    assert _api_status(api_key_create(team=team, created_by=owner, name="ci")[1])[0] == 200


def test_api_auth_checks_membership_even_when_a_row_is_deleted_elsewhere(team, editor) -> None:
    """Key auth checks the owner's membership on every request, whatever removed it."""
    _, key = api_key_create(team=team, created_by=editor, name="laptop")
    Membership.objects.filter(team=team, user=editor).delete()
    status, body = _api_status(key)
    assert status == 401 and "left the team" in body


def test_jobs_a_removed_member_started_keep_running_for_the_team(
    team, owner, editor, cells
) -> None:
    from webapp.projects.services import cell_run_create

    run = cell_run_create(cell=cells["finetune"], created_by=editor)
    job_start(job_id=run.job_id)
    membership_remove(membership=_membership(team, editor))
    job = CellRun.objects.get(pk=run.pk).job
    assert job.status == JobStatus.RUNNING and job.team_id == team.pk
    assert job.created_by_id == editor.pk
    # The worker goes on reporting, and the team still sees the job.
    assert job_progress(job_id=job.pk, current=3, total=10) is not None
    assert client_for(owner).get(reverse("job_detail", args=[job.pk])).status_code == 200
    assert job_succeed(job_id=job.pk).status == JobStatus.SUCCEEDED


def test_the_last_owner_can_be_neither_removed_nor_demoted(team, owner, editor) -> None:
    mine = _membership(team, owner)
    with pytest.raises(ValidationError, match="olga is the last owner of Lab"):
        membership_remove(membership=mine)
    with pytest.raises(ValidationError, match="last owner"):
        membership_role_change(membership=mine, role=Role.EDITOR)
    page = _remove(client_for(owner), mine, follow=True).content.decode()
    assert (
        "olga is the last owner of Lab; make another member an owner before you remove them."
        in (page)
    )
    assert _membership(team, owner).role == Role.OWNER
    # With a second owner, the first may step down and then leave.
    membership_role_change(membership=_membership(team, editor), role=Role.OWNER)
    membership_role_change(membership=mine, role=Role.VIEWER)
    response = _remove(client_for(editor), _membership(team, owner))
    assert response["Location"] == reverse("team_detail", args=[team.pk])
    assert list(
        team.memberships.filter(role=Role.OWNER).values_list("user__username", flat=True)
    ) == ["ed"]


def test_owner_removing_themselves_goes_to_the_dashboard(team, owner, editor, viewer) -> None:
    membership_role_change(membership=_membership(team, editor), role=Role.OWNER)
    response = _remove(client_for(owner), _membership(team, owner))
    assert response["Location"] == reverse("dashboard")
    membership_role_change(membership=_membership(team, viewer), role=Role.OWNER)
    response = _remove(client_for(editor), _membership(team, editor), **HTMX)
    assert response["HX-Redirect"] == reverse("dashboard")


def test_personal_team_owner_cannot_leave(owner) -> None:
    personal = Team.objects.get(memberships__user=owner, personal=True)
    with pytest.raises(ValidationError, match="last owner"):
        membership_remove(membership=_membership(personal, owner))


def test_role_change_from_the_team_page(team, owner, viewer) -> None:
    client = client_for(owner)
    url = reverse("membership_role", args=[_membership(team, viewer).pk])
    response = client.post(url, {"role": "editor"}, follow=True)
    assert "vic is now editor of Lab." in response.content.decode()
    assert _membership(team, viewer).role == Role.EDITOR
    response = client.post(url, {"role": "admin"}, follow=True)
    assert "Unknown role &#x27;admin&#x27;." in response.content.decode()
    assert _membership(team, viewer).role == Role.EDITOR


def test_htmx_gets_the_members_card_back(team, owner, viewer) -> None:
    client = client_for(owner)
    response = _remove(client, _membership(team, viewer), **HTMX)
    card = response.content.decode()
    assert response.status_code == 200 and card.startswith('<section class="card" id="members">')
    assert "vic is no longer a member of Lab." in card and ">vic <" not in card
    response = _remove(client, _membership(team, owner), **HTMX)
    assert 'class="msg error">olga is the last owner of Lab' in response.content.decode()


def test_team_page_offers_the_owner_confirmed_forms_and_no_one_else(
    team, owner, editor, viewer
) -> None:
    invitation_create(team=team, invited_by=owner, invitee="zoe")
    url = reverse("team_detail", args=[team.pk])
    page = client_for(owner).get(url).content.decode()
    for name in ("membership_remove", "membership_role"):
        assert reverse(name, args=[_membership(team, viewer).pk]) in page
    assert (
        page.count('hx-confirm="Remove ') == 3
        and 'hx-confirm="Revoke the invitation of zoe' in page
    )
    for user in (editor, viewer):
        other = client_for(user).get(url).content.decode()
        assert "hx-confirm" not in other and "Revoke" not in other


def test_revoked_invitation_link_stops_working(team, owner, outsider) -> None:
    invitation = invitation_create(team=team, invited_by=owner, invitee="oscar")
    link = reverse("invitation_accept", args=[invitation.token])
    assert client_for(outsider).get(link).status_code == 200
    response = client_for(owner).post(
        reverse("invitation_revoke", args=[invitation.pk]), follow=True
    )
    assert "The invitation of oscar is revoked." in response.content.decode()
    assert client_for(outsider).post(link).status_code == 404
    assert not Membership.objects.filter(team=team, user=outsider).exists()


def test_an_accepted_invitation_cannot_be_revoked(team, owner, outsider) -> None:
    invitation = invitation_create(team=team, invited_by=owner, invitee="oscar")
    invitation_accept(invitation=invitation, user=outsider)
    with pytest.raises(ValidationError, match="already accepted this invitation"):
        invitation_revoke(invitation=invitation)
    assert Invitation.objects.filter(pk=invitation.pk).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    "postgres" not in os.environ.get("DATABASE_URL", ""),
    reason="row locks need PostgreSQL (SQLite serialises every writer anyway)",
)
def test_two_owners_removing_each_other_at_once_leave_one_owner(team, owner, editor) -> None:
    """While one removal is uncommitted, the other waits for the team's lock and then sees
    the first: without the lock both would count two owners and leave none."""
    membership_role_change(membership=_membership(team, editor), role=Role.OWNER)
    other: dict[str, object] = {}

    def remove_editor() -> None:
        try:
            membership_remove(membership=_membership(team, editor))
            other["result"] = "removed"
        except ValidationError as exc:
            other["result"] = exc.messages[0]
        finally:
            connection.close()

    with transaction.atomic():
        membership_remove(membership=_membership(team, owner))
        thread = threading.Thread(target=remove_editor)
        thread.start()
        thread.join(timeout=1)
        assert thread.is_alive(), "the second removal did not wait for the first"
    thread.join(timeout=30)
    assert other["result"] == (
        "ed is the last owner of Lab; make another member an owner before you remove them."
    )
    assert list(team.memberships.values_list("user__username", "role")) == [
        ("ed", "owner"),
        ("vic", "viewer"),
    ]
