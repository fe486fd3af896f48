"""The API-key page: create (the key is shown once), list by prefix with last use, revoke."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from webapp.api.keys import api_key_create, api_key_revoke
from webapp.api.models import ApiKey
from webapp.core.forms import add_service_errors
from webapp.teams.access import get_for_user, role_of
from webapp.teams.models import ROLE_CAN, Team


class KeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    read_only = forms.BooleanField(required=False, help_text="Can read, list and chat; no changes.")


@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest, team_id: int) -> HttpResponse:
    team = get_for_user(Team, request.user, team_id)
    can_edit = role_of(request.user, team) in ROLE_CAN["edit"]
    form, new_key, status = KeyForm(), None, 200
    if request.method == "POST":
        team = get_for_user(Team, request.user, team_id, need="edit")
        form = KeyForm(request.POST)
        if form.is_valid():
            try:
                _, new_key = api_key_create(
                    team=team,
                    created_by=request.user,
                    name=form.cleaned_data["name"],
                    read_only=form.cleaned_data["read_only"],
                )
                form = KeyForm()
            except ValidationError as exc:
                add_service_errors(form, exc)
                status = 400
        else:
            status = 400
    keys = ApiKey.objects.filter(team=team).select_related("created_by")
    context = {"team": team, "form": form, "keys": keys, "new_key": new_key, "can_edit": can_edit}
    return render(request, "api/keys.html", context, status=status)


@login_required
@require_POST
def api_key_revoke_view(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_for_user(ApiKey, request.user, key_id, need="edit")
    api_key_revoke(key=key)
    messages.success(request, f"Key {key.prefix}… revoked.")
    return redirect("api_keys", team_id=key.team_id)
