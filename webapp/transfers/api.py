"""/api/transfers: Trans-LoRA through the native API. A transfer is a transfer cell's run
(its id is the run's id); every object is fetched through webapp.teams.access within
the key's team, so other teams' objects are 404 and viewers' keys only read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, StreamingHttpResponse
from ninja import Query, Router, Schema, Status
from pydantic import Field

from webapp.api.native.common import ERRORS, MAX_ID, ListOut, caller_of, id_path
from webapp.jobs.models import Job
from webapp.projects.models import CellRun, Project
from webapp.projects.run_outputs import outputs_of
from webapp.projects.services import (
    cell_create,
    cell_run_cancel,
    cell_run_create,
    cell_run_resume,
)
from webapp.teams.access import get_for_user
from webapp.transfers.selectors import (
    adapter_lineage,
    project_transfers,
    run_lineage,
    transfer_files,
    transferable_state,
)
from webapp.transfers.services import transferable_job_create, transfers_rebase_project

router = Router(tags=["transfers"])
RUNS = CellRun.objects.select_related("cell__project__team", "job")


class TransferIn(Schema):
    project: int = Field(ge=1, le=MAX_ID)
    source_cell: int = Field(ge=1, le=MAX_ID, description="A fine-tune cell of the team")
    target_model: str = Field(min_length=1, max_length=200)
    title: str = Field("", max_length=100)
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Other transfer cell settings: n_synthetic, max_attempts, unfiltered, "
        "ablation_unfiltered, ablation_seeds_only, distillation, epochs, learning_rate, ...",
    )


class TransferOut(Schema):
    id: int
    object: str = "transfer"
    project: int
    cell: int
    version: int
    status: str
    source_model: str | None
    target_model: str | None
    phases: dict[str, Any]
    accuracy: dict[str, Any]
    acceptance_rate: float | None
    distillation_pairs: int | None
    adapter_download: str | None
    lineage: list[dict[str, Any]]
    error: str | None
    created_at: datetime


class RebaseIn(Schema):
    project: int = Field(ge=1, le=MAX_ID)
    source_model: str = Field(min_length=1, max_length=200)
    target_model: str = Field(min_length=1, max_length=200)
    options: dict[str, Any] = Field(default_factory=dict)


class RebaseOut(Schema):
    object: str = "rebase"
    created: list[TransferOut]
    skipped: list[dict[str, Any]]


class TransferableOut(Schema):
    object: str = "transferable"
    run: int
    ready: bool
    status: str | None
    job: int | None
    data_exists: bool
    error: str | None


def _out(run: CellRun) -> TransferOut:
    outputs = outputs_of(run)
    report = outputs.report or {}
    synthesis = report.get("synthesis") or {}
    done = run.status == "succeeded" and report
    return TransferOut(
        id=run.pk,
        project=run.cell.project_id,
        cell=run.cell_id,
        version=run.version,
        status=run.status,
        source_model=(outputs.source or {}).get("base_model"),
        target_model=run.inputs.get("base_model"),
        phases=outputs.phases or {},
        accuracy=report.get("accuracy") or {},
        acceptance_rate=synthesis.get("acceptance_rate"),
        distillation_pairs=report.get("distillation_pairs"),
        adapter_download=f"/api/transfers/{run.pk}/adapter.zip" if done else None,
        lineage=adapter_lineage(run=run),
        error=outputs.error or None,
        created_at=run.created_at,
    )


def _project(request: HttpRequest, project_id: int, need: str = "view") -> Project:
    caller = caller_of(request)
    qs = Project.objects.filter(team=caller.team).select_related("team")
    return get_for_user(qs, caller.user, project_id, need=need)  # type: ignore[arg-type]


def _run(
    request: HttpRequest, run_id: int, *, kinds: tuple[str, ...], need: str = "view"
) -> CellRun:
    caller = caller_of(request)
    qs = RUNS.filter(cell__project__team=caller.team, cell__kind__in=kinds)
    return get_for_user(qs, caller.user, run_id, need=need)  # type: ignore[arg-type]


class ProjectQuery(Schema):
    project: int = Field(ge=1, le=MAX_ID)


@router.get("", response={200: ListOut[TransferOut], **ERRORS}, summary="A notebook's transfers")
def transfer_list(request: HttpRequest, q: Query[ProjectQuery]) -> ListOut[TransferOut]:
    rows = project_transfers(project=_project(request, q.project))
    return ListOut[TransferOut](data=[_out(r["run"]) for r in rows if r["run"] is not None])


@router.post("", response={201: TransferOut, **ERRORS}, summary="Add a transfer cell and run it")
def transfer_create(request: HttpRequest, body: TransferIn) -> Status:
    project = _project(request, body.project, need="edit")
    user = caller_of(request).user
    config = {**body.options, "source_cell": body.source_cell, "base_model": body.target_model}
    cell = cell_create(
        project=project, kind="transfer", config=config, title=body.title, created_by=user
    )
    run = cell_run_create(cell=cell, created_by=user)
    return Status(201, _out(RUNS.get(pk=run.pk)))


@router.get(
    "/lineage/{run_id}",
    response={200: list[dict[str, Any]], **ERRORS},
    summary="Where an adapter came from (fine-tune or transfer run), and what evaluated it",
)
def adapter_lineage_get(request: HttpRequest, run_id: int = id_path()) -> list[dict[str, Any]]:
    return run_lineage(run=_run(request, run_id, kinds=("finetune", "transfer")))


def _transferable_out(run: CellRun) -> TransferableOut:
    state = transferable_state(run=run)
    return TransferableOut(
        run=run.pk,
        ready=state["ready"],
        status=state.get("status"),
        job=state.get("job"),
        data_exists=state["data_exists"],
        error=state.get("error"),
    )


@router.get(
    "/transferable/{run_id}",
    response={200: TransferableOut, **ERRORS},
    summary="Whether a fine-tune's adapter keeps seeds and a discriminator",
)
def transferable_get(request: HttpRequest, run_id: int = id_path()) -> TransferableOut:
    return _transferable_out(_run(request, run_id, kinds=("finetune",)))


@router.post(
    "/transferable/{run_id}",
    response={202: TransferableOut, **ERRORS},
    summary="Keep seeds and train the discriminator (while the dataset exists)",
)
def transferable_start(request: HttpRequest, run_id: int = id_path()) -> Status:
    run = _run(request, run_id, kinds=("finetune",), need="edit")
    transferable_job_create(run=run, created_by=caller_of(request).user)
    return Status(202, _transferable_out(RUNS.get(pk=run.pk)))


@router.post(
    "/rebase",
    response={201: RebaseOut, **ERRORS},
    summary="Move every adapter of a notebook from one base model to another",
)
def rebase(request: HttpRequest, body: RebaseIn) -> Status:
    project = _project(request, body.project, need="edit")
    result = transfers_rebase_project(
        project=project,
        source_model=body.source_model,
        target_model=body.target_model,
        created_by=caller_of(request).user,
        config=body.options,
    )
    created = [_out(RUNS.filter(cell=c).order_by("-version").first()) for c in result.created]
    skipped = [{"cell": c.pk, "reason": why} for c, why in result.skipped]
    return Status(201, RebaseOut(created=created, skipped=skipped))


# After the fixed paths (/rebase, /lineage/..., /transferable/...), which it would shadow.
@router.get("/{run_id}", response={200: TransferOut, **ERRORS}, summary="A transfer's state")
def transfer_get(request: HttpRequest, run_id: int = id_path()) -> TransferOut:
    return _out(_run(request, run_id, kinds=("transfer",)))


@router.post("/{run_id}/cancel", response={200: TransferOut, **ERRORS}, summary="Cancel")
def transfer_cancel(request: HttpRequest, run_id: int = id_path()) -> TransferOut:
    run = _run(request, run_id, kinds=("transfer",), need="edit")
    if run.job_id is None or Job.objects.get(pk=run.job_id).is_finished:
        raise ValidationError("This transfer has already finished.")
    return _out(cell_run_cancel(run=run, by=caller_of(request).user))


@router.post(
    "/{run_id}/resume",
    response={200: TransferOut, **ERRORS},
    summary="Resume a cancelled or failed transfer; the phases it finished are reused",
)
def transfer_resume(request: HttpRequest, run_id: int = id_path()) -> TransferOut:
    run = _run(request, run_id, kinds=("transfer",), need="edit")
    return _out(cell_run_resume(run=run, by=caller_of(request).user))


@router.get(
    "/{run_id}/adapter.zip",
    response={200: None, **ERRORS},
    summary="The transferred adapter (PEFT folder), its manifest and report.json, zipped",
)
def transfer_adapter_zip(request: HttpRequest, run_id: int = id_path()) -> StreamingHttpResponse:
    from webapp.projects.artifacts import stream_zip

    run = _run(request, run_id, kinds=("transfer",))
    files = transfer_files(run=run)
    if not files:
        raise Http404("This transfer has no adapter to download yet.")
    response = StreamingHttpResponse(stream_zip(files), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="transferred-run-{run.pk}.zip"'
    return response
