"""/api/cells and /api/runs: edit, move and delete cells, run them, follow and cancel runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from webapp.api.errors import ApiError
from webapp.api.native.common import ERRORS, ListOut, Page, caller_of, id_path, paginate
from webapp.jobs.models import Job
from webapp.projects.models import Cell, CellRun
from webapp.projects.services import (
    CellEditConflict,
    cell_delete,
    cell_move,
    cell_run_cancel,
    cell_run_create,
    cell_update,
)
from webapp.teams.access import get_for_user

router = Router(tags=["cells"])
runs_router = Router(tags=["runs"])

# Run outputs that are internal (server paths, the full loss history, the worker's config).
HIDDEN_OUTPUTS = frozenset({"history", "config", "output_dir", "adapter_dir"})


class CellOut(Schema):
    id: int
    object: str = "cell"
    project: int
    position: int
    kind: str
    title: str
    config: dict[str, Any]
    version: int = Field(description="Goes up by one with each saved edit.")
    created_at: datetime
    updated_at: datetime
    latest_run: int | None = None


class CellIn(Schema):
    kind: str = Field(min_length=1, max_length=30)
    title: str = Field("", max_length=100)
    config: dict[str, Any] = Field(default_factory=dict)


class CellPatch(Schema):
    title: str | None = Field(None, max_length=100)
    # Merged into the saved config; the whole result is validated by the cell's kind.
    config: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(
        None,
        description="The version the edit starts from (from a GET). If someone saved the "
        "cell since, nothing is saved and the answer is a 409 naming the version it is at.",
    )


class MoveIn(Schema):
    direction: Literal[-1, 1]


class RunOut(Schema):
    id: int
    object: str = "cell.run"
    cell: int
    version: int
    status: str
    job_status: str | None
    progress: int | None = Field(None, description="Percent done, when known.")
    step: int
    total_steps: int | None
    metrics: dict[str, Any]
    error: str
    outputs: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None


def cell_out(cell: Cell) -> CellOut:
    runs = getattr(cell, "_prefetched_objects_cache", {}).get("runs")
    latest = (
        runs[0].pk if runs else cell.runs.order_by("-version").values_list("pk", flat=True).first()
    )
    return CellOut(
        id=cell.pk,
        project=cell.project_id,
        position=cell.position,
        kind=cell.kind,
        title=cell.title,
        config=cell.config or {},
        version=cell.version,
        created_at=cell.created_at,
        updated_at=cell.updated_at,
        latest_run=latest,
    )


def run_out(run: CellRun) -> RunOut:
    job: Job | None = run.job
    outputs = {k: v for k, v in (run.outputs or {}).items() if k not in HIDDEN_OUTPUTS}
    return RunOut(
        id=run.pk,
        cell=run.cell_id,
        version=run.version,
        status=run.status,
        job_status=job.status if job else None,
        progress=job.progress_percent if job else None,
        step=job.progress_current if job else 0,
        total_steps=job.progress_total if job else None,
        metrics=job.metrics if job else {},
        error=job.error if job else "",
        outputs=outputs,
        created_at=run.created_at,
        finished_at=run.finished_at,
    )


def _cell(request: HttpRequest, cell_id: int, *, need: str = "view") -> Cell:
    caller = caller_of(request)
    qs = Cell.objects.filter(project__team=caller.team).select_related("project")
    return get_for_user(qs, caller.user, cell_id, need=need)  # type: ignore[arg-type]


def _run(request: HttpRequest, run_id: int, *, need: str = "view") -> CellRun:
    caller = caller_of(request)
    qs = CellRun.objects.filter(cell__project__team=caller.team).select_related("job", "cell")
    return get_for_user(qs, caller.user, run_id, need=need)  # type: ignore[arg-type]


@router.get("/{cell_id}", response={200: CellOut, **ERRORS}, summary="Get a cell")
def cell_get(request: HttpRequest, cell_id: int = id_path()) -> CellOut:
    return cell_out(_cell(request, cell_id))


@router.patch("/{cell_id}", response={200: CellOut, **ERRORS}, summary="Edit a cell")
def cell_patch(request: HttpRequest, body: CellPatch, cell_id: int = id_path()) -> CellOut:
    cell = _cell(request, cell_id, need="edit")
    config = {**(cell.config or {}), **body.config}
    try:
        cell = cell_update(cell=cell, config=config, title=body.title, seen_version=body.version)
    except CellEditConflict as exc:
        raise ApiError(409, exc.messages[0], param="version", code="edit_conflict") from exc
    return cell_out(cell)


@router.delete("/{cell_id}", response={204: None, **ERRORS}, summary="Delete a cell")
def cell_remove(request: HttpRequest, cell_id: int = id_path()) -> Status:
    cell_delete(cell=_cell(request, cell_id, need="edit"))
    return Status(204, None)


@router.post("/{cell_id}/move", response={200: CellOut, **ERRORS}, summary="Move a cell")
def cell_move_view(request: HttpRequest, body: MoveIn, cell_id: int = id_path()) -> CellOut:
    cell = cell_move(cell=_cell(request, cell_id, need="edit"), direction=body.direction)
    return cell_out(cell)


@router.post("/{cell_id}/runs", response={201: RunOut, **ERRORS}, summary="Run a cell")
def cell_run(request: HttpRequest, cell_id: int = id_path()) -> Status:
    cell = _cell(request, cell_id, need="edit")
    run = cell_run_create(cell=cell, created_by=caller_of(request).user)
    return Status(201, run_out(CellRun.objects.select_related("job").get(pk=run.pk)))


@router.get("/{cell_id}/runs", response={200: ListOut[RunOut], **ERRORS}, summary="A cell's runs")
def cell_runs(request: HttpRequest, page: Query[Page], cell_id: int = id_path()) -> ListOut[RunOut]:
    cell = _cell(request, cell_id)
    runs, more = paginate(cell.runs.select_related("job"), limit=page.limit, after=page.after)
    return ListOut[RunOut](data=[run_out(r) for r in runs], has_more=more)


@runs_router.get("/{run_id}", response={200: RunOut, **ERRORS}, summary="Run status")
def run_get(request: HttpRequest, run_id: int = id_path()) -> RunOut:
    return run_out(_run(request, run_id))


@runs_router.post("/{run_id}/cancel", response={200: RunOut, **ERRORS}, summary="Cancel a run")
def run_cancel(request: HttpRequest, run_id: int = id_path()) -> RunOut:
    run = _run(request, run_id, need="edit")
    cell_run_cancel(run=run, by=caller_of(request).user)
    return run_out(_run(request, run_id))
