from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from webapp.projects.models import Project
from webapp.teams.access import visible_to
from webapp.teams.selectors import team_list_for_user


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard" if request.user.is_authenticated else "login")


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    teams = team_list_for_user(user=request.user)
    projects = visible_to(Project, request.user).select_related("team")[:50]
    return render(request, "core/dashboard.html", {"teams": teams, "projects": projects})
