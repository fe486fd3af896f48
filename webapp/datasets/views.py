"""Dataset views. The upload view swaps in the streaming, size-limited upload handler."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from webapp.core.forms import add_service_errors
from webapp.datasets.forms import UploadForm
from webapp.datasets.models import Dataset, DatasetPurpose, DatasetVersion
from webapp.datasets.selectors import dataset_list_for_team, dataset_versions, team_storage_left
from webapp.datasets.services import dataset_version_create
from webapp.datasets.uploads import LimitedStreamingUploadHandler
from webapp.teams.access import get_for_user, role_of
from webapp.teams.models import ROLE_CAN, Team


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@login_required
@require_GET
def dataset_list(request: HttpRequest, team_id: int) -> HttpResponse:
    team = get_for_user(Team, request.user, team_id)
    can_edit = role_of(request.user, team) in ROLE_CAN["edit"]
    context = {"team": team, "datasets": dataset_list_for_team(team=team), "can_edit": can_edit}
    return render(request, "datasets/dataset_list.html", context)


# CSRF is checked by the inner view: the upload handler must be installed before anything
# (including CsrfViewMiddleware) reads request.POST.
@csrf_exempt
@login_required
@require_http_methods(["GET", "POST"])
def dataset_upload(request: HttpRequest, team_id: int) -> HttpResponse:
    # Access is checked before a single byte of the body is read.
    team = get_for_user(Team, request.user, team_id, need="edit")
    handler = LimitedStreamingUploadHandler(
        request, storage_left=team_storage_left(team=team), team_id=team.pk
    )
    request.upload_handlers = [handler]
    try:
        if request.method == "POST":
            request.POST  # noqa: B018 - parse (stream into storage) now, under our handler
            if handler.error:
                # Refused before any write happened, so no CSRF check is needed to answer.
                status = handler.error_status
                return _upload_page(request, team, handler, error=handler.error, status=status)
        return _dataset_upload(request, team, handler)
    finally:
        handler.discard_leftovers()


def _initial(team: Team, params: Any) -> dict[str, str]:
    """Name and purpose to start the form with; a new version keeps its dataset's purpose."""
    name = params.get("name", "")
    existing = team.datasets.filter(name=name.strip()).values_list("purpose", flat=True).first()
    purpose = existing or params.get("purpose") or DatasetPurpose.TRAINING
    return {"name": name, "purpose": purpose}


def _upload_page(
    request: HttpRequest,
    team: Team,
    handler: LimitedStreamingUploadHandler,
    *,
    form: UploadForm | None = None,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    if _wants_json(request) and request.method == "POST":
        if form is not None and not error:
            error = " ".join(str(e) for errs in form.errors.values() for e in errs)
        return JsonResponse({"ok": False, "error": error}, status=status)
    if form is None:
        form = UploadForm(initial=_initial(team, request.POST))
    context = {
        "upload_error": error,
        "team": team,
        "form": form,
        "limit": filesizeformat(handler.max_bytes),
        "max_bytes": handler.max_bytes,
        "existing": dataset_list_for_team(team=team),
    }
    return render(request, "datasets/upload.html", context, status=status)


@csrf_protect
def _dataset_upload(
    request: HttpRequest, team: Team, handler: LimitedStreamingUploadHandler
) -> HttpResponse:
    if request.method != "POST":
        return _upload_page(
            request, team, handler, form=UploadForm(initial=_initial(team, request.GET))
        )
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _upload_page(request, team, handler, form=form, status=400)
    try:
        version = dataset_version_create(
            team=team,
            name=form.cleaned_data["name"],
            upload=form.cleaned_data["file"],
            fmt=form.cleaned_data["format"] or "",
            preview_model=form.cleaned_data["preview_model"] or "",
            purpose=form.cleaned_data["purpose"] or "",
            created_by=request.user,
        )
    except ValidationError as exc:
        add_service_errors(form, exc)
        # A limit or a server failure (disk full: 507) keeps its status; other refusals: 400.
        status = getattr(exc, "status", 400)
        return _upload_page(request, team, handler, form=form, status=status)
    url = reverse("dataset_version_detail", args=[version.pk])
    if _wants_json(request):
        return JsonResponse({"ok": True, "redirect": url, "version": version.version})
    return redirect(url)


@login_required
@require_GET
def dataset_detail(request: HttpRequest, dataset_id: int) -> HttpResponse:
    dataset = get_for_user(Dataset.objects.select_related("team"), request.user, dataset_id)
    context = {
        "dataset": dataset,
        "team": dataset.team,
        "versions": dataset_versions(dataset=dataset),
        "can_edit": role_of(request.user, dataset.team) in ROLE_CAN["edit"],
    }
    return render(request, "datasets/dataset_detail.html", context)


@login_required
@require_GET
def dataset_version_detail(request: HttpRequest, version_id: int) -> HttpResponse:
    version = get_for_user(
        DatasetVersion.objects.select_related("dataset__team", "validation_job"),
        request.user,
        version_id,
    )
    context = {"version": version, "dataset": version.dataset, "team": version.dataset.team}
    # htmx polls the status fragment until validation settles.
    template = "datasets/_version_status.html" if request.htmx else "datasets/version_detail.html"
    return render(request, template, context)
