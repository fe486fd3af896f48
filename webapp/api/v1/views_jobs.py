"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, pause, resume, events, checkpoints."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse

from webapp.api.auth import Caller, api_view
from webapp.api.body import field, json_body
from webapp.api.errors import ApiError, from_validation_error
from webapp.api.models import FineTuningJob
from webapp.api.paging import listing, page, page_list, parse_limit, parse_ref
from webapp.api.v1.methods import request_method
from webapp.api.v1.render import checkpoint_objects, event_object, job_object
from webapp.api.v1.selectors import (
    RUN_MARK,
    file_get,
    fine_tuning_job_get,
    fine_tuning_job_page,
    fine_tuning_jobs_tagged,
    resolve_fine_tuned,
    team_for_write,
)
from webapp.api.v1.services import (
    EXTRA_ALIASES,
    fine_tuning_job_cancel,
    fine_tuning_job_create,
    fine_tuning_job_pause,
    fine_tuning_job_resume,
)
from webapp.datasets.models import DatasetVersion
from webapp.jobs.models import JobEvent

SUFFIX = re.compile(r"^[A-Za-z0-9_-]{0,64}$")
MAX_METADATA, MAX_METADATA_KEY = 16, 64  # OpenAI's limits on metadata pairs and key length
# The cell form's field names -> the request parameter a client sent.
PARAMS = {
    "base_model": "model",
    "epochs": "hyperparameters.n_epochs",
    "batch_size": "hyperparameters.batch_size",
    "learning_rate": "hyperparameters.learning_rate_multiplier",
    "learning_rate_multiplier": "hyperparameters.learning_rate_multiplier",
    "beta": "method.dpo.hyperparameters.beta",
    "init_cell": "model",
}


def _start_from(caller: Caller, model: str) -> FineTuningJob | None:
    """The finished job whose model an `ft:` model names, to train on further (OpenAI allows
    DPO on a fine-tuned model); None for a base model."""
    if not model.startswith("ft:"):
        return None
    try:
        ft, step = resolve_fine_tuned(caller, model)
    except ApiError as exc:
        message = exc.message
        if model.rsplit(":", 1)[-1].startswith(RUN_MARK):
            message = (
                "A notebook's model cannot be fine-tuned further through this API; start from "
                "a fine-tuning job's model (ft:...:ftjob-N), or add a fine-tune cell that "
                "starts from it in its notebook."
            )
        raise ApiError(400, message, param="model", code="model_not_found") from None
    if step is not None:
        raise ApiError(
            400,
            "Fine-tune from a job's final model, not from one of its checkpoints.",
            param="model",
            code="invalid_value",
        )
    return ft


def _file(caller: Caller, ref: str, param: str) -> DatasetVersion:
    """A file of the caller's team; another team's or a missing one is an invalid file."""
    try:
        return file_get(caller, parse_ref("file-", ref, what="file", param=param))
    except ApiError as exc:
        if exc.status != 404:
            raise
        raise ApiError(400, f"Invalid file: {ref}", param=param, code="invalid_file") from None


def _create(request: HttpRequest, caller: Caller) -> HttpResponse:
    team = team_for_write(caller)
    data = json_body(request)
    model = field(data, "model", str, required=True)
    training_ref = field(data, "training_file", str, required=True)
    validation_ref = field(data, "validation_file", str)
    suffix = field(data, "suffix", str, default="")
    if not SUFFIX.match(suffix):
        raise ApiError(400, "suffix: up to 64 letters, digits, '-' or '_'.", param="suffix")
    seed = field(data, "seed", int)
    metadata = field(data, "metadata", dict, default={})
    if len(metadata) > MAX_METADATA or not all(isinstance(v, str) for v in metadata.values()):
        raise ApiError(400, f"metadata: at most {MAX_METADATA} string values.", param="metadata")
    extras = field(data, "tunebook", dict, default={})
    training_method, hyper = request_method(data)
    start = _start_from(caller, model)
    training_file = _file(caller, training_ref, "training_file")
    validation_file = _file(caller, validation_ref, "validation_file") if validation_ref else None
    try:
        ft = fine_tuning_job_create(
            team=team,
            created_by=caller.user,
            model=model,
            training_file=training_file,
            suffix=suffix,
            seed=seed,
            metadata=metadata,
            hyperparameters=hyper,
            extras=extras,
            validation_file=validation_file,
            training_method=training_method,
            start=start,
        )
    except ValidationError as exc:
        extra_params = {EXTRA_ALIASES.get(k, k): f"tunebook.{k}" for k in extras}
        return from_validation_error(exc, params={**extra_params, **PARAMS})
    return JsonResponse(job_object(fine_tuning_job_get(caller, ft.pk)))


def _metadata_filter(request: HttpRequest) -> dict[str, str]:
    """OpenAI's `metadata[key]=value` query parameters: plain equality, as many as a job holds."""
    wanted = {
        key[len("metadata[") : -1]: value
        for key, value in request.GET.items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    if len(wanted) > MAX_METADATA:
        raise ApiError(400, f"At most {MAX_METADATA} metadata filters.", param="metadata")
    for key in wanted:
        if not 0 < len(key) <= MAX_METADATA_KEY:
            raise ApiError(
                400,
                f"A metadata key has 1 to {MAX_METADATA_KEY} characters: metadata[{key[:80]}].",
                param="metadata",
            )
    return wanted


def _list(request: HttpRequest, caller: Caller) -> HttpResponse:
    wanted = _metadata_filter(request)
    if wanted:  # rare: a filtered list, not the compiled query
        qs = fine_tuning_jobs_tagged(caller, wanted)
        return JsonResponse(
            page(qs, request, prefix="ftjob-", what="fine-tuning job", render=job_object)
        )
    # The usual list: the same page as page() returns, from a query compiled once.
    after = request.GET.get("after")
    before = parse_ref("ftjob-", after, what="fine-tuning job", param="after") if after else None
    limit = parse_limit(request)
    rows = fine_tuning_job_page(caller, limit=limit, before=before)
    return JsonResponse(listing([job_object(r) for r in rows[:limit]], has_more=len(rows) > limit))


def _job(caller: Caller, job_id: str, *, need: str = "view") -> FineTuningJob:
    return fine_tuning_job_get(
        caller, parse_ref("ftjob-", job_id, what="fine-tuning job"), need=need
    )


def _get(request: HttpRequest, caller: Caller, job_id: str) -> HttpResponse:
    return JsonResponse(job_object(_job(caller, job_id)))


def _action(action: Callable[..., FineTuningJob]) -> Callable[..., HttpResponse]:
    def handler(request: HttpRequest, caller: Caller, job_id: str) -> HttpResponse:
        ft = _job(caller, job_id, need="edit")
        action(ft=ft, by=caller.user)
        return JsonResponse(job_object(_job(caller, job_id)))

    return handler


def _events(request: HttpRequest, caller: Caller, job_id: str) -> HttpResponse:
    ft = _job(caller, job_id)
    qs = JobEvent.objects.filter(job_id=ft.job_id)
    return JsonResponse(page(qs, request, prefix="ftevent-", what="event", render=event_object))


def _checkpoints(request: HttpRequest, caller: Caller, job_id: str) -> HttpResponse:
    return JsonResponse(page_list(checkpoint_objects(_job(caller, job_id)), request))


jobs_view = api_view({"GET": _list, "POST": _create})
job_view = api_view({"GET": _get})
job_cancel_view = api_view({"POST": _action(fine_tuning_job_cancel)})
job_pause_view = api_view({"POST": _action(fine_tuning_job_pause)})
job_resume_view = api_view({"POST": _action(fine_tuning_job_resume)})
job_events_view = api_view({"GET": _events})
job_checkpoints_view = api_view({"GET": _checkpoints})
