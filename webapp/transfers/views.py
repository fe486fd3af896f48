"""Trans-LoRA views: parse, call a service or selector, render. Every object comes
through get_for_user (outsiders 404, viewers read-only)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.core.forms import error_text
from webapp.core.redirects import redirect_to_next
from webapp.projects.artifacts import stream_zip
from webapp.projects.models import CellRun, Project
from webapp.teams.access import get_for_user, role_of
from webapp.teams.models import ROLE_CAN
from webapp.transfers.forms import RebaseForm
from webapp.transfers.selectors import project_transfers, transfer_files, transferable_state
from webapp.transfers.services import transferable_job_create, transfers_rebase_project

RUNS = CellRun.objects.select_related("cell__project__team", "job")


@login_required
@require_GET
def transferable_panel(request: HttpRequest, run_id: int) -> HttpResponse:
    """htmx: the "keep transferable" panel of a fine-tune run page, polled while it trains."""
    run = get_for_user(RUNS, request.user, run_id)
    if run.cell.kind != "finetune":
        raise Http404("Only fine-tune runs have a discriminator.")
    context = {
        "run": run,
        "t": transferable_state(run=run),
        "can_edit": role_of(request.user, run.cell.project.team) in ROLE_CAN["edit"],
    }
    return render(request, "transfers/_transferable.html", context)


@login_required
@require_POST
def transferable_train(request: HttpRequest, run_id: int) -> HttpResponse:
    """Keep seeds and train the discriminator for a finished fine-tune (its data must exist)."""
    run = get_for_user(RUNS, request.user, run_id, need="edit")
    try:
        job = transferable_job_create(run=run, created_by=request.user)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Training the discriminator (job #{job.pk}).")
    return redirect_to_next(request, request.POST.get("next"), "run_detail", run.pk)


@login_required
@require_GET
def transfer_download(request: HttpRequest, run_id: int) -> StreamingHttpResponse:
    """The transferred adapter, its manifest and the transfer report as a zip."""
    run = get_for_user(RUNS, request.user, run_id)
    files = transfer_files(run=run)
    if not files:
        raise Http404("This run has no transferred adapter to download.")
    response = StreamingHttpResponse(stream_zip(files), content_type="application/zip")
    name = f"transferred-run-{run.pk}-v{run.version}.zip"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@login_required
@require_http_methods(["GET", "POST"])
def project_rebase(request: HttpRequest, project_id: int) -> HttpResponse:
    """Move every adapter of the project from base A to base B: one transfer cell each."""
    need = "edit" if request.method == "POST" else "view"
    qs = Project.objects.select_related("team")
    project = get_for_user(qs, request.user, project_id, need=need)
    form = RebaseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            result = transfers_rebase_project(
                project=project,
                source_model=data["source_model"],
                target_model=data["target_model"],
                created_by=request.user,
                config={"n_synthetic": data["n_synthetic"], "quantization": data["quantization"]},
            )
        except ValidationError as exc:
            messages.error(request, error_text(exc))
        else:
            messages.success(request, f"Queued {len(result.created)} transfer(s).")
            for cell, why in result.skipped:
                messages.warning(request, f"Skipped {cell}: {why}.")
            return redirect("project_rebase", project_id=project.pk)
    context = {
        "project": project,
        "team": project.team,
        "form": form,
        "rows": project_transfers(project=project),
        "can_edit": role_of(request.user, project.team) in ROLE_CAN["edit"],
    }
    return render(request, "transfers/rebase.html", context)
