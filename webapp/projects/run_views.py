"""A cell run's live page (htmx polling), its controls, and the artifact download."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from finetune_core.contracts.train import PREFERENCE_METRICS
from webapp.core.forms import error_text
from webapp.jobs.models import Job
from webapp.projects.artifacts import artifact_files, stream_zip
from webapp.projects.cell_kinds import REGISTRY
from webapp.projects.charts import loss_chart, loss_points
from webapp.projects.models import CellRun
from webapp.projects.run_outputs import FinetuneOutputs, outputs_of
from webapp.projects.selectors import cell_run_blocker, run_history, run_log
from webapp.projects.services import cell_run_cancel, cell_run_resume, cell_run_select_final
from webapp.teams.access import get_for_user, role_of
from webapp.teams.models import ROLE_CAN

RUNS = CellRun.objects.select_related("cell__project__team", "job")


def _eta_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


# The engine's preference metrics, in words.
PREFERENCE_LABELS = dict(
    zip(
        PREFERENCE_METRICS,
        ("Reward, preferred", "Reward, not preferred", "Reward margin", "Preference accuracy"),
        strict=True,
    )
)


def preference_metrics(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    """A DPO or SimPO run's latest rewards and accuracy, on training pairs and (val_) on
    validation pairs: (label, value) for those it has logged."""
    found = []
    for key, label in PREFERENCE_LABELS.items():
        for name, shown in ((key, label), (f"val_{key}", f"{label} (validation)")):
            value = metrics.get(name)
            if isinstance(value, int | float):
                found.append((shown, value))
    return found


def run_context(request: HttpRequest, run: CellRun) -> dict[str, Any]:
    job: Job | None = run.job
    metrics = dict(job.metrics) if job else {}
    history = run_history(run=run, job=job)
    train, val = loss_points(history)
    finished = job.is_finished if job else run.status not in ("queued", "running")
    outputs = outputs_of(run)
    return {
        "run": run,
        "cell": run.cell,
        "spec": REGISTRY.get(run.cell.kind),
        "project": run.cell.project,
        "team": run.cell.project.team,
        "job": job,
        "metrics": metrics,
        "eta": _eta_text(metrics.get("eta_s")) if job and not finished else "",
        "peak_mib": (metrics.get("peak_memory_bytes") or 0) / 2**20,
        "preference_metrics": preference_metrics(metrics),
        "chart": loss_chart(train, val, job.progress_total if job else None),
        "events": run_log(job=job) if job else [],
        "checkpoints": outputs.checkpoints if isinstance(outputs, FinetuneOutputs) else [],
        "finished": finished,
        "blocked": cell_run_blocker(cell=run.cell),
        "can_edit": role_of(request.user, run.cell.project.team) in ROLE_CAN["edit"],
        "has_artifacts": bool(
            run.cell.kind == "finetune" and run.job_id and artifact_files(outputs.output_dir)
        ),
    }


@login_required
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_for_user(RUNS, request.user, run_id)
    template = "projects/_run_live.html" if request.htmx else "projects/run_detail.html"
    return render(request, template, run_context(request, run))


def _act(request: HttpRequest, run_id: int, action: str) -> HttpResponse:
    run = get_for_user(RUNS, request.user, run_id, need="edit")
    try:
        if action == "cancel":
            cell_run_cancel(run=run, by=request.user)
            messages.success(request, "Cancelling: the run stops after its current step.")
        elif action == "resume":
            cell_run_resume(run=run, by=request.user)
            messages.success(request, "Resume queued: training continues from the last checkpoint.")
        else:
            which = request.POST.get("which", "")
            cell_run_select_final(run=run, which=which, by=request.user)
            messages.success(request, f"Making {which} the final adapter.")
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    return redirect("run_detail", run_id=run.pk)


@login_required
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    return _act(request, run_id, "cancel")


@login_required
@require_POST
def run_resume(request: HttpRequest, run_id: int) -> HttpResponse:
    return _act(request, run_id, "resume")


@login_required
@require_POST
def run_select_final(request: HttpRequest, run_id: int) -> HttpResponse:
    return _act(request, run_id, "final")


@login_required
@require_GET
def run_artifacts(request: HttpRequest, run_id: int) -> StreamingHttpResponse:
    """The final adapter folder and manifest as a zip, streamed."""
    run = get_for_user(RUNS, request.user, run_id)
    files = artifact_files(outputs_of(run).output_dir) if run.cell.kind == "finetune" else []
    if not files:
        raise Http404("This run has no adapter to download yet.")
    response = StreamingHttpResponse(stream_zip(files), content_type="application/zip")
    name = f"adapter-run-{run.pk}-v{run.version}.zip"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
