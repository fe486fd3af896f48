from collections.abc import Callable
from functools import partial

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from webapp.core.forms import add_service_errors, error_text
from webapp.teams.access import get_for_user, role_of
from webapp.teams.forms import InvitationForm, TeamForm
from webapp.teams.models import ROLE_CAN, Invitation, Membership, Role, Team
from webapp.teams.selectors import (
    invitation_get_by_token,
    team_members,
    team_pending_invitations,
)
from webapp.teams.services import (
    invitation_accept,
    invitation_create,
    invitation_matches,
    invitation_revoke,
    membership_remove,
    membership_role_change,
    team_create,
)

MEMBERSHIPS = Membership.objects.select_related("team", "user")
INVITATIONS = Invitation.objects.select_related("team")


def _members_context(request: HttpRequest, team: Team) -> dict[str, object]:
    """What the members card (teams/_members.html) needs, on the page and alone for htmx."""
    role = role_of(request.user, team)
    return {
        "team": team,
        "role": role,
        "is_owner": role in ROLE_CAN["own"],
        "members": team_members(team=team),
        "invitations": team_pending_invitations(team=team),
        "roles": Role.choices,
        "invite_form": InvitationForm(),
    }


def _team_page(
    request: HttpRequest, team: Team, *, status: int = 200, **extra: object
) -> HttpResponse:
    # The notebooks, datasets and jobs cards come from their apps' template tags.
    context = _members_context(request, team)
    context.update(can_edit=context["role"] in ROLE_CAN["edit"], **extra)
    return render(request, "teams/team_detail.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def team_new(request: HttpRequest) -> HttpResponse:
    form = TeamForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = team_create(name=form.cleaned_data["name"], owner=request.user)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            return redirect("team_detail", team_id=team.pk)
    return render(request, "teams/team_new.html", {"form": form})


@login_required
@require_GET
def team_detail(request: HttpRequest, team_id: int) -> HttpResponse:
    team = get_for_user(Team, request.user, team_id)
    return _team_page(request, team)


@login_required
@require_POST
def team_invite(request: HttpRequest, team_id: int) -> HttpResponse:
    team = get_for_user(Team, request.user, team_id, need="own")
    form = InvitationForm(request.POST)
    if form.is_valid():
        try:
            invitation = invitation_create(
                team=team,
                invited_by=request.user,
                invitee=form.cleaned_data["invitee"],
                role=form.cleaned_data["role"],
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            link = request.build_absolute_uri(reverse("invitation_accept", args=[invitation.token]))
            messages.success(request, f"Send this link to {invitation.invitee}: {link}")
            return redirect("team_detail", team_id=team.pk)
    return _team_page(request, team, invite_form=form, status=400)


@login_required
@require_http_methods(["GET", "POST"])
def invitation_accept_view(request: HttpRequest, token: str) -> HttpResponse:
    invitation = invitation_get_by_token(token=token)
    # The link is only for its invitee; anyone else learns nothing from it.
    if not invitation_matches(invitation=invitation, user=request.user):
        raise Http404("No such invitation")
    if request.method == "POST":
        try:
            invitation_accept(invitation=invitation, user=request.user)
        except ValidationError as exc:
            messages.error(request, error_text(exc))
        else:
            messages.success(request, f"You joined {invitation.team.name}.")
            return redirect("team_detail", team_id=invitation.team_id)
    return render(request, "teams/invitation_accept.html", {"invitation": invitation})


def _members_changed(
    request: HttpRequest, team: Team, service: Callable[[], object], notice: str
) -> HttpResponse:
    """Run an owner's change to the members; htmx gets the members card back, a plain
    form the team page. Whoever removed themselves goes to the dashboard."""
    try:
        service()
    except ValidationError as exc:
        notice, error = "", error_text(exc)
    else:
        error = ""
    if role_of(request.user, team) is None:
        messages.success(request, notice)
        if request.htmx:
            return HttpResponseClientRedirect(reverse("dashboard"))
        return redirect("dashboard")
    if request.htmx:
        context = {**_members_context(request, team), "members_notice": notice}
        return render(request, "teams/_members.html", {**context, "members_error": error})
    (messages.error if error else messages.success)(request, error or notice)
    return redirect("team_detail", team_id=team.pk)


@login_required
@require_POST
def membership_remove_view(request: HttpRequest, membership_id: int) -> HttpResponse:
    m = get_for_user(MEMBERSHIPS, request.user, membership_id, need="own")
    notice = f"{m.user} is no longer a member of {m.team}."
    return _members_changed(request, m.team, partial(membership_remove, membership=m), notice)


@login_required
@require_POST
def membership_role_view(request: HttpRequest, membership_id: int) -> HttpResponse:
    m = get_for_user(MEMBERSHIPS, request.user, membership_id, need="own")
    role = request.POST.get("role", "")
    notice = f"{m.user} is now {dict(Role.choices).get(role, role).lower()} of {m.team}."
    change = partial(membership_role_change, membership=m, role=role)
    return _members_changed(request, m.team, change, notice)


@login_required
@require_POST
def invitation_revoke_view(request: HttpRequest, invitation_id: int) -> HttpResponse:
    invitation = get_for_user(INVITATIONS, request.user, invitation_id, need="own")
    revoke = partial(invitation_revoke, invitation=invitation)
    notice = f"The invitation of {invitation.invitee} is revoked."
    return _members_changed(request, invitation.team, revoke, notice)
