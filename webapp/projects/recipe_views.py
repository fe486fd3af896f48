"""Export a notebook as a recipe, and re-create one from a recipe."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods

from webapp.core.forms import add_service_errors
from webapp.projects.forms import RecipeImportForm
from webapp.projects.models import Project
from webapp.projects.recipe_load import MAX_RECIPE_BYTES
from webapp.projects.recipes import recipe_dump, recipe_from_project, recipe_parse
from webapp.projects.services import project_create_from_recipe
from webapp.teams.access import get_for_user
from webapp.teams.models import Team

CONTENT_TYPES = {"json": "application/json", "yaml": "application/yaml"}


@login_required
@require_GET
def recipe_export(request: HttpRequest, project_id: int, fmt: str) -> HttpResponse:
    project = get_for_user(Project, request.user, project_id)
    if fmt not in CONTENT_TYPES:
        raise Http404("Recipes are JSON or YAML.")
    text = recipe_dump(recipe_from_project(project=project), fmt=fmt)
    response = HttpResponse(text, content_type=f"{CONTENT_TYPES[fmt]}; charset=utf-8")
    filename = f"{slugify(project.name) or 'notebook'}.recipe.{fmt}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
@require_http_methods(["GET", "POST"])
def recipe_import(request: HttpRequest, team_id: int) -> HttpResponse:
    team = get_for_user(Team, request.user, team_id, need="edit")
    form = RecipeImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            if upload is not None and upload.size > MAX_RECIPE_BYTES:
                raise ValidationError(f"A recipe is at most {MAX_RECIPE_BYTES // 1024} KiB.")
            text = upload.read() if upload is not None else form.cleaned_data["text"]
            recipe = recipe_parse(text)  # bounded, and before the write transaction
            project = project_create_from_recipe(
                team=team,
                recipe=recipe,
                name=form.cleaned_data["name"].strip(),
                created_by=request.user,
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            return redirect("project_detail", project_id=project.pk)
    status = 400 if request.method == "POST" else 200
    context = {"team": team, "form": form}
    return render(request, "projects/recipe_import.html", context, status=status)
