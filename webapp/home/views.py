from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_GET

from webapp.projects.models import Project
from webapp.teams.access import visible_to
from webapp.teams.selectors import invitations_for_user, team_list_for_user


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard" if request.user.is_authenticated else "login")


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    # Browsers and crawlers ask for /favicon.ico whatever the page links: send them to the SVG.
    return redirect(static("favicon.svg"), permanent=True)


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    teams = team_list_for_user(user=request.user)
    projects = visible_to(Project, request.user).select_related("team")[:50]
    invitations = invitations_for_user(user=request.user)
    context = {"teams": teams, "projects": projects, "invitations": invitations}
    return render(request, "core/dashboard.html", context)
