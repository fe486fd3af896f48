from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.core.forms import add_service_errors, error_text
from webapp.datasets.selectors import dataset_list_for_team
from webapp.jobs.selectors import job_list_for_team
from webapp.projects.forms import ProjectForm
from webapp.projects.selectors import project_list_for_team
from webapp.teams.access import get_for_user, role_of
from webapp.teams.forms import InvitationForm, TeamForm
from webapp.teams.models import ROLE_CAN, Team
from webapp.teams.selectors import (
    invitation_get_by_token,
    team_members,
    team_pending_invitations,
)
from webapp.teams.services import (
    invitation_accept,
    invitation_create,
    invitation_matches,
    team_create,
)


def _team_page(
    request: HttpRequest, team: Team, *, status: int = 200, **extra: object
) -> HttpResponse:
    role = role_of(request.user, team)
    context = {
        "team": team,
        "role": role,
        "can_edit": role in ROLE_CAN["edit"],
        "is_owner": role in ROLE_CAN["own"],
        "members": team_members(team=team),
        "invitations": team_pending_invitations(team=team),
        "projects": project_list_for_team(team=team),
        "datasets": dataset_list_for_team(team=team),
        "jobs": job_list_for_team(team=team, limit=10),
        "invite_form": InvitationForm(),
        "project_form": ProjectForm(),
    }
    context.update(extra)
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
