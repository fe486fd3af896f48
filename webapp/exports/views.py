"""The Export panel of fine-tune and transfer run pages: start an export (editors), watch
it (htmx), cancel it, download its files streamed from storage. Every object comes through
get_for_user (outsiders 404, viewers read-only)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp.core import storage
from webapp.core.downloads import stored_file_response
from webapp.core.forms import error_text
from webapp.exports.models import Export
from webapp.exports.selectors import export_file_key, export_panel, export_zip_files
from webapp.exports.services import export_create
from webapp.jobs.services import job_cancel
from webapp.projects.artifacts import stream_zip
from webapp.projects.models import CellRun
from webapp.teams.access import get_for_user, role_of
from webapp.teams.models import ROLE_CAN

RUNS = CellRun.objects.select_related("cell__project__team", "job")
EXPORTS = Export.objects.select_related("run__cell__project__team", "job")


def _panel(request: HttpRequest, run: CellRun) -> HttpResponse:
    context = {
        "run": run,
        "ex": export_panel(run=run),
        "can_edit": role_of(request.user, run.cell.project.team) in ROLE_CAN["edit"],
    }
    return render(request, "exports/_panel.html", context)


@login_required
@require_GET
def export_panel_view(request: HttpRequest, run_id: int) -> HttpResponse:
    """htmx: the run page's Export panel, polled while an export is queued or running."""
    return _panel(request, get_for_user(RUNS, request.user, run_id))


@login_required
@require_POST
def export_start(request: HttpRequest, run_id: int) -> HttpResponse:
    """Queue an export: `export` is "FORMAT/TYPE" (the panel's choice), or `format` and
    `type` apart."""
    run = get_for_user(RUNS, request.user, run_id, need="edit")
    fmt, _, type_ = request.POST.get("export", "").partition("/")
    fmt, type_ = fmt or request.POST.get("format", ""), type_ or request.POST.get("type", "")
    try:
        export = export_create(run=run, format=fmt, type=type_ or None, by=request.user)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Exporting as {export.label} (job #{export.job_id}).")
    return redirect("run_detail", run_id=run.pk)


@login_required
@require_POST
def export_cancel(request: HttpRequest, export_id: int) -> HttpResponse:
    export = get_for_user(EXPORTS, request.user, export_id, need="edit")
    try:
        job_cancel(job=export.job, by=request.user)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Export #{export.pk} cancelled: no files are kept.")
    return redirect("run_detail", run_id=export.run_id)


@login_required
@require_GET
def export_file(request: HttpRequest, export_id: int, name: str) -> HttpResponse:
    """One file of a finished export, streamed from storage (or a presigned redirect)."""
    export = get_for_user(EXPORTS, request.user, export_id)
    key = export_file_key(export=export, name=name)
    if key is None:
        raise Http404("This export has no such file (yet).")
    return stored_file_response(key, store=storage.artifacts(), filename=name)


@login_required
@require_GET
def export_zip(request: HttpRequest, export_id: int) -> StreamingHttpResponse:
    """The whole export folder as a zip, made on the fly from storage."""
    export = get_for_user(EXPORTS, request.user, export_id)
    files = export_zip_files(export=export)
    if not files:
        raise Http404("This export has no files to download (yet).")
    response = StreamingHttpResponse(stream_zip(files), content_type="application/zip")
    name = f"run-{export.run_id}-{export.format}-{export.type}.zip"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
