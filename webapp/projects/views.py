"""Notebook views: parse the request, call a service, render."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.forms.utils import pretty_name
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.core.forms import add_service_errors, error_text
from webapp.projects.cell_display import cell_settings, referenced_cells
from webapp.projects.cell_kinds import REGISTRY, CellConfigForm, get_kind
from webapp.projects.estimate import preflight
from webapp.projects.forms import CellKindForm, ProjectForm
from webapp.projects.live_views import cell_live_response
from webapp.projects.models import Cell, Project
from webapp.projects.selectors import (
    cell_run_blocker,
    dataset_cell_deleted,
    dataset_cell_version,
    finetune_dataset_version,
    notebook_cells,
)
from webapp.projects.services import (
    CellEditConflict,
    cell_create,
    cell_delete,
    cell_move,
    cell_run_create,
    cell_update,
    project_create,
)
from webapp.teams.access import get_for_user, role_of
from webapp.teams.models import ROLE_CAN, Team


def _config_form(
    project: Project, kind: str, position: int, data: object = None, initial: dict | None = None
) -> CellConfigForm:
    return get_kind(kind).form(data=data, initial=initial, project=project, position=position)


def _notebook(
    request: HttpRequest,
    project: Project,
    *,
    add_kind: str | None = None,
    add_form: CellConfigForm | None = None,
    kind_form: CellKindForm | None = None,
    edited: tuple[int, QueryDict] | None = None,
    status: int = 200,
) -> HttpResponse:
    """`edited`: a cell's id and the edit that was not saved, shown in its form again."""
    can_edit = role_of(request.user, project.team) in ROLE_CAN["edit"]
    cells = list(notebook_cells(project=project))
    next_position = (cells[-1].position + 1) if cells else 1
    named = referenced_cells(cells)
    for cell in cells:
        spec = REGISTRY.get(cell.kind)
        cell.spec = spec
        cell.settings = cell_settings(cell, named)
        cell.blocked = cell_run_blocker(cell=cell) if can_edit else None
        cell.edit_title = cell.title
        if can_edit and spec is not None and edited and edited[0] == cell.pk:
            cell.edit_form = _config_form(project, cell.kind, cell.position, data=edited[1])
            cell.edit_title = edited[1].get("title", "")
        elif can_edit and spec is not None:
            cell.edit_form = _config_form(project, cell.kind, cell.position, initial=cell.config)
        if cell.kind == "dataset":
            cell.dataset_version = dataset_cell_version(cell=cell)
            cell.dataset_deleted = cell.dataset_version is None and dataset_cell_deleted(cell=cell)
        elif cell.kind == "finetune":
            cell.estimate = preflight(cell.config, finetune_dataset_version(cell=cell))
    if add_kind in REGISTRY and add_form is None and can_edit:
        add_form = _config_form(project, add_kind, next_position)
    context = {
        "project": project,
        "team": project.team,
        "cells": cells,
        "can_edit": can_edit,
        "kinds": list(REGISTRY.values()),
        "add_kind": add_kind if add_kind in REGISTRY else None,
        "add_form": add_form,
        "kind_form": kind_form or CellKindForm(initial={"kind": add_kind}),
    }
    template = "projects/_add_cell.html" if request.htmx and add_form else "projects/notebook.html"
    return render(request, template, context, status=status)


@login_required
@require_POST
def project_new(request: HttpRequest, team_id: int) -> HttpResponse:
    team = get_for_user(Team, request.user, team_id, need="edit")
    form = ProjectForm(request.POST)
    if form.is_valid():
        try:
            project = project_create(team=team, created_by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            return redirect("project_detail", project_id=project.pk)
    messages.error(request, "A project needs a name.")
    return redirect("team_detail", team_id=team.pk)


@login_required
@require_GET
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project = get_for_user(Project.objects.select_related("team"), request.user, project_id)
    return _notebook(request, project, add_kind=request.GET.get("add"))


@login_required
@require_POST
def cell_add(request: HttpRequest, project_id: int) -> HttpResponse:
    project = get_for_user(
        Project.objects.select_related("team"), request.user, project_id, need="edit"
    )
    kind_form = CellKindForm(request.POST)
    if not kind_form.is_valid():
        return _notebook(request, project, kind_form=kind_form, status=400)
    kind = kind_form.cleaned_data["kind"]
    form = _config_form(project, kind, position=10**9, data=request.POST)
    if form.is_valid():
        try:
            cell_create(
                project=project,
                kind=kind,
                config=request.POST.dict(),
                title=kind_form.cleaned_data["title"],
                created_by=request.user,
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            return redirect("project_detail", project_id=project.pk)
    return _notebook(request, project, add_kind=kind, add_form=form, status=400)


@login_required
@require_POST
def cell_edit(request: HttpRequest, cell_id: int) -> HttpResponse:
    cell = get_for_user(
        Cell.objects.select_related("project__team"), request.user, cell_id, need="edit"
    )
    seen = request.POST.get("version", "")
    try:
        cell_update(
            cell=cell,
            config=request.POST.dict(),
            title=request.POST.get("title"),
            seen_version=int(seen) if seen.isdigit() else None,
        )
    except CellEditConflict as exc:
        differ = _differences(cell, request.POST, exc.current)
        messages.error(request, f"{cell}: {error_text(exc)} {differ}")
        # The page again, with this edit kept in the cell's form over the saved version.
        return _notebook(request, cell.project, edited=(cell.pk, request.POST), status=409)
    except ValidationError as exc:
        messages.error(request, f"{cell}: {error_text(exc)}")
    return redirect(reverse("project_detail", args=[cell.project_id]) + f"#cell-{cell.pk}")


def _differences(cell: Cell, posted: QueryDict, current: Cell) -> str:
    """Names the settings the refused edit sets otherwise than the saved cell."""
    fields = _config_form(cell.project, cell.kind, cell.position).fields
    saved = {**current.config, "title": current.title}
    differ = [
        str(fields[name].label or pretty_name(name)) if name in fields else "Title"
        for name in [*fields, "title"]
        if _value(fields.get(name), posted.get(name, ""))
        != _value(fields.get(name), saved.get(name))
    ]
    if not differ:
        return "Your edit is kept below; save it again to keep it."
    return (
        f"Yours and the saved one differ in: {', '.join(differ)}. The saved settings are "
        "shown above; your edit is kept in the form below: check it and save again."
    )


def _value(field: forms.Field | None, raw: Any) -> Any:
    """A setting as its field reads it, so "0" and 0.0 compare equal; else its text."""
    text = "" if raw is None else str(raw)
    try:
        return field.to_python(text) if field is not None else text
    except ValidationError:
        return text


@login_required
@require_POST
def cell_remove(request: HttpRequest, cell_id: int) -> HttpResponse:
    cell = get_for_user(Cell.objects.select_related("project"), request.user, cell_id, need="edit")
    project_id = cell.project_id
    try:
        cell_delete(cell=cell)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    return redirect("project_detail", project_id=project_id)


@login_required
@require_POST
def cell_reorder(request: HttpRequest, cell_id: int) -> HttpResponse:
    cell = get_for_user(Cell.objects.select_related("project"), request.user, cell_id, need="edit")
    try:
        cell_move(cell=cell, direction=-1 if request.POST.get("direction") == "up" else 1)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    return redirect("project_detail", project_id=cell.project_id)


@login_required
@require_POST
def cell_run(request: HttpRequest, cell_id: int) -> HttpResponse:
    cell = get_for_user(
        Cell.objects.select_related("project__team"), request.user, cell_id, need="edit"
    )
    try:
        if blocked := cell_run_blocker(cell=cell):
            raise ValidationError(blocked)
        run = cell_run_create(cell=cell, created_by=request.user)
    except ValidationError as exc:
        messages.error(request, f"{cell}: {error_text(exc)}")
    else:
        messages.success(request, f"{cell}: run v{run.version} queued.")
    if request.htmx:  # the Run button swaps the cell's live part in place, no reload
        return cell_live_response(request, cell)
    return redirect("project_detail", project_id=cell.project_id)


@login_required
@require_POST
def cell_estimate(request: HttpRequest, project_id: int) -> HttpResponse:
    """htmx: the pre-flight estimate for the fine-tune settings being edited, before saving."""
    project = get_for_user(Project, request.user, project_id)
    raw = request.GET.get("position") or str(10**9)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
        return HttpResponseBadRequest("position must be a cell position (a whole number).")
    position = int(raw)
    form = _config_form(project, "finetune", position, data=request.POST)
    form.is_valid()  # estimate from whatever is valid so far
    config = {k: v for k, v in form.cleaned_data.items() if v not in (None, "")}
    source = Cell(project=project, kind="finetune", config=config)
    e = preflight(config, finetune_dataset_version(cell=source)) if "base_model" in config else None
    target = "add-estimate" if position == 10**9 else ""
    return render(request, "projects/_estimate.html", {"e": e, "estimate_id": target})
