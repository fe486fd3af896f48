"""/api/exports: exports of finished fine-tune and transfer runs through the native API.

Registered with one line in webapp/api/native/app.py ROUTERS. Every object is fetched
through webapp.teams.access with the key's user, within the key's team (other teams'
objects are 404, viewers' keys only read). Files stream from storage, never staged."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Query, Router, Schema, Status
from pydantic import Field

from webapp.api.errors import ApiError
from webapp.api.native.common import ERRORS, MAX_ID, ListOut, caller_of, id_path
from webapp.core import storage
from webapp.core.downloads import stored_file_response
from webapp.core.paths import public_text
from webapp.exports.models import Export
from webapp.exports.selectors import export_file_key, export_zip_files, run_exports
from webapp.exports.services import export_create
from webapp.jobs.services import job_cancel
from webapp.projects.artifacts import stream_zip
from webapp.projects.models import CellRun
from webapp.teams.access import get_for_user

router = Router(tags=["exports"])
RUNS = CellRun.objects.select_related("cell__project__team")
EXPORTS = Export.objects.select_related("run__cell__project__team", "job", "created_by")
CONFLICTS = {"export_in_progress"}


class ExportIn(Schema):
    run: int = Field(ge=1, le=MAX_ID, description="A succeeded fine-tune or transfer run")
    format: str = Field(min_length=1, max_length=20, description="merged, gguf or adapter")
    type: str | None = Field(
        None,
        max_length=20,
        description="merged: bf16 or f16; gguf: f16, q8_0 or q4_0; adapter: as-trained "
        "(default: the first)",
    )


class FileOut(Schema):
    name: str
    bytes: int
    sha256: str
    url: str


class ProgressOut(Schema):
    percent: int | None
    stage: str


class ExportOut(Schema):
    id: int
    object: str = "export"
    run: int
    format: str
    type: str
    status: str
    job: int
    progress: ProgressOut
    error: str | None
    files: list[FileOut]
    download: str | None
    warnings: list[str]
    facts: dict[str, Any]
    replaced_by: int | None
    created_at: datetime
    finished_at: datetime | None


FACTS = ("seconds", "gguf_file", "dtype", "architecture", "parameters", "fidelity", "use_dora")


def _out(export: Export) -> ExportOut:
    job, ready = export.job, export.is_ready
    files = [
        FileOut(**f, url=f"/api/exports/{export.pk}/files/{f['name']}")
        for f in (export.files if ready else [])
    ]
    manifest = export.manifest or {}
    return ExportOut(
        id=export.pk,
        run=export.run_id,
        format=export.format,
        type=export.type,
        status=export.status,
        job=job.pk,
        progress=ProgressOut(percent=job.progress_percent, stage=public_text(job.progress_message)),
        error=public_text(job.error) if job.error else None,
        files=files,
        download=f"/api/exports/{export.pk}/download.zip" if ready else None,
        warnings=[public_text(w) for w in manifest.get("warnings", [])],
        facts={k: manifest[k] for k in FACTS if k in manifest},
        replaced_by=export.replaced_by_id,
        created_at=export.created_at,
        finished_at=job.finished_at,
    )


def _export(request: HttpRequest, export_id: int, need: str = "view") -> Export:
    caller = caller_of(request)
    qs = EXPORTS.filter(run__cell__project__team=caller.team)
    return get_for_user(qs, caller.user, export_id, need=need)  # type: ignore[arg-type]


def _refusal(exc: ValidationError) -> ApiError:
    """A service's refusal with its field as `param` and its own code (409 for a conflict)."""
    field, errors = next(iter(exc.error_dict.items()))
    error = errors[0]
    message = " ".join(m for e in errors for m in e.messages)
    status = 409 if error.code in CONFLICTS else 400
    return ApiError(status, message, param=field if field != "__all__" else None, code=error.code)


class RunQuery(Schema):
    run: int = Field(ge=1, le=MAX_ID)


@router.get("", response={200: ListOut[ExportOut], **ERRORS}, summary="A run's exports")
def export_list(request: HttpRequest, q: Query[RunQuery]) -> ListOut[ExportOut]:
    caller = caller_of(request)
    run = get_for_user(RUNS.filter(cell__project__team=caller.team), caller.user, q.run)
    return ListOut[ExportOut](data=[_out(e) for e in run_exports(run=run)])


@router.post(
    "",
    response={202: ExportOut, **ERRORS},
    summary="Export a finished run: merged weights, GGUF or the portable adapter (a job)",
)
def export_start(request: HttpRequest, body: ExportIn) -> Status:
    caller = caller_of(request)
    qs = RUNS.filter(cell__project__team=caller.team)
    run = get_for_user(qs, caller.user, body.run, need="edit")
    try:
        export = export_create(run=run, format=body.format, type=body.type, by=caller.user)
    except ValidationError as exc:
        if not hasattr(exc, "error_dict"):
            raise  # a team limit and the like: the API's usual handler
        raise _refusal(exc) from None
    return Status(202, _out(EXPORTS.get(pk=export.pk)))


@router.get("/{export_id}", response={200: ExportOut, **ERRORS}, summary="An export's state")
def export_get(request: HttpRequest, export_id: int = id_path()) -> ExportOut:
    return _out(_export(request, export_id))


@router.post("/{export_id}/cancel", response={200: ExportOut, **ERRORS}, summary="Cancel")
def export_cancel(request: HttpRequest, export_id: int = id_path()) -> ExportOut:
    export = _export(request, export_id, need="edit")
    if export.job.is_finished:
        raise ApiError(409, "This export has already finished.", code="export_finished")
    job_cancel(job=export.job, by=caller_of(request).user)
    return _out(EXPORTS.get(pk=export.pk))


@router.get(
    "/{export_id}/files/{name}",
    response={200: None, **ERRORS},
    summary="One file of a finished export, streamed from storage",
)
def export_file(request: HttpRequest, name: str, export_id: int = id_path()) -> HttpResponse:
    export = _export(request, export_id)
    key = export_file_key(export=export, name=name)
    if key is None:
        raise Http404("This export has no such file (yet).")
    return stored_file_response(key, store=storage.artifacts(), filename=name)


@router.get(
    "/{export_id}/download.zip",
    response={200: None, **ERRORS},
    summary="The whole export folder, zipped on the fly",
)
def export_zip(request: HttpRequest, export_id: int = id_path()) -> StreamingHttpResponse:
    export = _export(request, export_id)
    files = export_zip_files(export=export)
    if not files:
        raise Http404("This export has no files to download (yet).")
    response = StreamingHttpResponse(stream_zip(files), content_type="application/zip")
    name = f"run-{export.run_id}-{export.format}-{export.type}.zip"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
