"""/api/projects: the key's team's projects (notebooks)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from webapp.api.native.cells import CellIn, CellOut, cell_out
from webapp.api.native.common import ERRORS, ListOut, Page, caller_of, id_path, paginate
from webapp.api.v1.selectors import team_for_write
from webapp.projects.models import Project
from webapp.projects.recipes import recipe_check, recipe_from_project
from webapp.projects.selectors import notebook_cells, project_list_for_team
from webapp.projects.services import cell_create, project_create, project_create_from_recipe
from webapp.teams.access import get_for_user

router = Router(tags=["projects"])


class ProjectIn(Schema):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=10_000)


class ProjectOut(Schema):
    id: int
    object: str = "project"
    team: int
    name: str
    description: str
    created_at: datetime
    updated_at: datetime


def _out(project: Project) -> ProjectOut:
    return ProjectOut(
        id=project.pk,
        team=project.team_id,
        name=project.name,
        description=project.description,
        created_at=project.created_at,
        updated_at=project.updated_at,
    )


def project_for(request: HttpRequest, project_id: int, *, need: str = "view") -> Project:
    """A project of the key's team, through the access helper (else 404/403)."""
    caller = caller_of(request)
    qs = Project.objects.filter(team=caller.team)
    return get_for_user(qs, caller.user, project_id, need=need)  # type: ignore[arg-type]


@router.get("", response={200: ListOut[ProjectOut], **ERRORS}, summary="List projects")
def project_list(request: HttpRequest, page: Query[Page]) -> ListOut[ProjectOut]:
    caller = caller_of(request)
    rows, more = paginate(
        project_list_for_team(team=caller.team), limit=page.limit, after=page.after
    )
    return ListOut[ProjectOut](data=[_out(p) for p in rows], has_more=more)


@router.post("", response={201: ProjectOut, **ERRORS}, summary="Create a project")
def project_create_view(request: HttpRequest, body: ProjectIn) -> Status:
    caller = caller_of(request)
    team = team_for_write(caller)
    project = project_create(
        team=team, name=body.name, description=body.description, created_by=caller.user
    )
    return Status(201, _out(project))


class RecipeIn(Schema):
    recipe: dict[str, Any] = Field(
        description="A recipe as GET /api/projects/{id}/recipe returns it (tunebook_recipe: 1)."
    )
    name: str = Field("", max_length=100, description="Blank: the name in the recipe.")


@router.post(
    "/import",
    response={201: ProjectOut, **ERRORS},
    summary="Create a notebook from a recipe (datasets matched by name in the key's team)",
)
def project_import(request: HttpRequest, body: RecipeIn) -> Status:
    caller = caller_of(request)
    project = project_create_from_recipe(
        team=team_for_write(caller),
        recipe=recipe_check(body.recipe),
        name=body.name.strip(),
        created_by=caller.user,
    )
    return Status(201, _out(project))


@router.get(
    "/{project_id}/recipe",
    response={200: dict[str, Any], **ERRORS},
    summary="A notebook as a portable recipe (cells, settings, references)",
)
def project_recipe(request: HttpRequest, project_id: int = id_path()) -> dict[str, Any]:
    return recipe_from_project(project=project_for(request, project_id))


@router.get("/{project_id}", response={200: ProjectOut, **ERRORS}, summary="Get a project")
def project_get(request: HttpRequest, project_id: int = id_path()) -> ProjectOut:
    return _out(project_for(request, project_id))


@router.get(
    "/{project_id}/cells", response={200: ListOut[CellOut], **ERRORS}, summary="A notebook's cells"
)
def project_cells(request: HttpRequest, project_id: int = id_path()) -> ListOut[CellOut]:
    project = project_for(request, project_id)
    return ListOut[CellOut](data=[cell_out(c) for c in notebook_cells(project=project)])


@router.post("/{project_id}/cells", response={201: CellOut, **ERRORS}, summary="Add a cell")
def project_cell_add(request: HttpRequest, body: CellIn, project_id: int = id_path()) -> Status:
    project = project_for(request, project_id, need="edit")
    cell = cell_create(
        project=project,
        kind=body.kind,
        config=body.config,
        title=body.title,
        created_by=caller_of(request).user,
    )
    return Status(201, cell_out(cell))
