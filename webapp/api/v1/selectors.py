"""Reads for the API. Every object comes through the access helper, limited to the key's team."""

from __future__ import annotations

import functools
from typing import Any

from django.db.models import QuerySet
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.http import Http404
from django.utils.text import slugify

from finetune_core.contracts import layout
from webapp.api.auth import Caller
from webapp.api.errors import ApiError
from webapp.api.models import ApiProject, ChatCompletion, FineTuningJob
from webapp.api.paging import id_number
from webapp.api.prepared import PreparedQuery
from webapp.core import storage
from webapp.core.catalog import models as catalog_models
from webapp.datasets.models import DatasetVersion
from webapp.jobs.models import JobStatus
from webapp.projects.artifacts import manifest_trained_tokens
from webapp.projects.estimate import ESTIMATE
from webapp.projects.finetune_config import effective_hparams
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.run_outputs import outputs_of
from webapp.teams.access import get_for_user, visible_to
from webapp.teams.models import Team

CHECKPOINT_MARK = "ckpt-step-"
RUN_MARK = "run-"


def team_for_write(caller: Caller) -> Team:
    """The key's team, if the key's user may change things in it (else 403)."""
    return get_for_user(
        Team.objects.filter(pk=caller.team.pk), caller.user, caller.team.pk, need="edit"
    )


def files(caller: Caller) -> QuerySet[DatasetVersion]:
    qs = DatasetVersion.objects.filter(dataset__team=caller.team).select_related("dataset")
    return visible_to(qs, caller.user)


def file_get(caller: Caller, pk: int, *, need: str = "view") -> DatasetVersion:
    try:
        return get_for_user(files(caller), caller.user, pk, need=need)  # type: ignore[arg-type]
    except Http404:
        raise ApiError(404, f"No such File object: file-{pk}", code="not_found") from None


def _team_jobs(team_id: int) -> QuerySet[FineTuningJob]:
    qs = FineTuningJob.objects.filter(team_id=team_id).select_related("team", "job", "cell_run")
    # JSON no job object shows: not decoded on every list call. (`requested` is shown:
    # deferring it cost one query per listed job.)
    return qs.defer("job__params", "job__result").annotate(**JOB_PARAMS_KEYS)


def fine_tuning_jobs(caller: Caller) -> QuerySet[FineTuningJob]:
    return visible_to(_team_jobs(caller.team.pk), caller.user)


def fine_tuning_jobs_tagged(caller: Caller, metadata: dict[str, str]) -> QuerySet[FineTuningJob]:
    """The caller's jobs whose metadata holds each key with exactly that value. A key is
    only ever a key: as an expression, `a__regex` or `contains` is no ORM lookup."""
    qs = fine_tuning_jobs(caller)
    for i, (key, value) in enumerate(metadata.items()):
        name = f"metadata_{i}"
        qs = qs.alias(**{name: KeyTransform(key, "metadata")}).filter(**{name: value})
    return qs


# What a job object and a fine-tuned model show (render.job_object, /v1/models): loading
# every column of the four rows behind each listed job (timestamps, JSON) cost a third of
# the list's CPU. The team is the caller's, already loaded with the key.
LISTED_FIELDS = (
    *("id", "team_id", "base_model", "suffix", "training_file_ref", "seed", "metadata"),
    *("requested", "cell_run_id", "job_id", "paused_at", "model_deleted_at", "created_at"),
    *("job__id", "job__status", "job__finished_at", "job__error", "job__metrics"),
    *("job__progress_current", "job__progress_total"),
    *("cell_run__id", "cell_run__inputs"),
)
# Of the run's outputs (up to 500 history points, the config, ...), the three keys a
# listed job shows, extracted by the database instead of decoding all of it per job.
RUN_OUTPUT_KEYS = {
    "run_checkpoints": KeyTransform("checkpoints", "cell_run__outputs"),
    "run_output_dir": KeyTextTransform("output_dir", "cell_run__outputs"),
    "run_trained_tokens": KeyTransform("trained_tokens", "cell_run__outputs"),
}

# Of the job's params, the pre-flight estimate the job was queued with (render._estimate).
JOB_PARAMS_KEYS = {"job_estimate": KeyTransform(ESTIMATE, "job__params")}


def _visible_jobs(team_id: int, user_id: int) -> QuerySet[FineTuningJob]:
    # visible_to's filter, spelled with an id: a prepared query only sees placeholders.
    qs = FineTuningJob.objects.filter(team_id=team_id, team__memberships__user_id=user_id)
    listed = qs.select_related("job", "cell_run").only(*LISTED_FIELDS)
    return listed.annotate(**RUN_OUTPUT_KEYS, **JOB_PARAMS_KEYS)


def _with_team(rows: list[FineTuningJob], team: Team) -> list[FineTuningJob]:
    for ft in rows:
        FineTuningJob.team.field.set_cached_value(ft, team)
    return rows


def _job_page(limit: int, after: bool) -> PreparedQuery[FineTuningJob]:
    def build(team_id: int, user_id: int, before: int = 0) -> QuerySet[FineTuningJob]:
        qs = _visible_jobs(team_id, user_id).order_by("-pk")
        return (qs.filter(pk__lt=before) if after else qs)[: limit + 1]

    params = {"team_id": int, "user_id": int} | ({"before": int} if after else {})
    return PreparedQuery(build, **params)


# One compiled query per page size and cursor use (at most 2 x MAX_LIMIT shapes).
_JOB_PAGES: dict[tuple[int, bool], PreparedQuery[FineTuningJob]] = {}


def fine_tuning_job_page(caller: Caller, *, limit: int, before: int | None) -> list[FineTuningJob]:
    """Newest first, up to limit + 1 jobs (the extra one says whether there are more)."""
    shape = (limit, before is not None)
    query = _JOB_PAGES.get(shape) or _JOB_PAGES.setdefault(shape, _job_page(*shape))
    values = {"team_id": caller.team.pk, "user_id": caller.user.pk}
    rows = query.run(**values, **({"before": before} if before is not None else {}))
    return _with_team(rows, caller.team)


def fine_tuning_job_get(caller: Caller, pk: int, *, need: str = "view") -> FineTuningJob:
    try:
        return get_for_user(fine_tuning_jobs(caller), caller.user, pk, need=need)  # type: ignore[arg-type]
    except Http404:
        raise ApiError(404, f"No such fine-tuning job: ftjob-{pk}", code="not_found") from None


# Lists slugify the same few names for every job: a pure function, worth remembering.
_slug = functools.lru_cache(maxsize=4096)(slugify)


def team_slug(team: Team) -> str:
    return _slug(team.name) or f"team-{team.pk}"


def fine_tuned_model_id(ft: FineTuningJob) -> str:
    return f"ft:{ft.base_model}:{team_slug(ft.team)}:{_slug(ft.suffix)}:ftjob-{ft.pk}"


def _run_output(ft: FineTuningJob, key: str) -> Any:
    """One key of the run's outputs: annotated by the list queries, else from the run."""
    if hasattr(ft, f"run_{key}"):
        return getattr(ft, f"run_{key}")
    run = ft.cell_run
    return getattr(outputs_of(run, "finetune"), key) if run is not None else None


def checkpoints(ft: FineTuningJob) -> list[dict[str, Any]]:
    return list(_run_output(ft, "checkpoints") or [])


def checkpoint_dir(ft: FineTuningJob, step: int) -> str | None:
    """The storage key of a complete checkpoint's adapter folder (finetune_core's layout:
    checkpoints/step-NNNNNN, complete once its trainer state is there)."""
    output_dir = _run_output(ft, "output_dir")
    if not output_dir:
        return None
    folder = layout.checkpoint_dir(output_dir, step).as_posix()
    return folder if storage.exists(storage.join(folder, layout.TRAINER_STATE)) else None


def model_succeeded(ft: FineTuningJob) -> bool:
    return ft.job is not None and ft.job.status == JobStatus.SUCCEEDED


def trained_tokens(ft: FineTuningJob) -> int | None:
    """Tokens the finished run trained on, as the worker stored it when the run succeeded."""
    if not model_succeeded(ft) or ft.cell_run_id is None:
        return None
    stored = _run_output(ft, "trained_tokens")
    if stored is not None:
        return int(stored)
    # Runs that finished before the worker stored it (and were not backfilled).
    return manifest_trained_tokens(_run_output(ft, "output_dir"))


def _notebook_models(team_id: int, user_id: int) -> QuerySet[CellRun]:
    qs = CellRun.objects.filter(
        cell__project__team_id=team_id,
        cell__kind="finetune",
        status=RunStatus.SUCCEEDED,
        outputs__has_key="adapter_dir",
    ).exclude(cell__project__in=ApiProject.objects.values("project"))
    # visible_to's filter (CellRun.TEAM_PATH), spelled with an id for the prepared query.
    path = CellRun.TEAM_PATH
    qs = qs.filter(**{f"{path}__memberships__user_id": user_id})
    return qs.select_related("cell").order_by("-pk")


_NOTEBOOK_MODELS = PreparedQuery(_notebook_models, team_id=int, user_id=int)


def notebook_models(caller: Caller) -> list[CellRun]:
    """Succeeded fine-tune runs of the team's notebooks (the API's own notebook excluded)."""
    return _NOTEBOOK_MODELS.run(team_id=caller.team.pk, user_id=caller.user.pk)


def notebook_model_id(run: CellRun, team: Team) -> str:
    """`ft:<base>:<team>:<cell title or cell-N>:run-<id>`; `team` is the run's (the caller's)."""
    base = (run.inputs or {}).get("base_model", "")
    name = slugify(run.cell.title) or f"cell-{run.cell.position}"
    return f"ft:{base}:{team_slug(team)}:{name}:{RUN_MARK}{run.pk}"


def _notebook_model(caller: Caller, model: str, number: str) -> CellRun:
    runs = {run.pk: run for run in notebook_models(caller)}
    run = runs.get(id_number(number))
    if run is None or notebook_model_id(run, caller.team) != model:
        raise _not_found(model)
    return run


def _fine_tuned_models(team_id: int, user_id: int) -> QuerySet[FineTuningJob]:
    qs = _visible_jobs(team_id, user_id).filter(
        model_deleted_at__isnull=True, job__status=JobStatus.SUCCEEDED
    )
    return qs.order_by("-pk")


_FINE_TUNED_MODELS = PreparedQuery(_fine_tuned_models, team_id=int, user_id=int)


def fine_tuned_models(caller: Caller) -> list[FineTuningJob]:
    rows = _FINE_TUNED_MODELS.run(team_id=caller.team.pk, user_id=caller.user.pk)
    return _with_team(rows, caller.team)


def _not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def resolve_fine_tuned(caller: Caller, model: str) -> tuple[FineTuningJob, int | None]:
    """`ft:...:ftjob-N` or `ft:...:ftjob-N:ckpt-step-S` -> (job, step or None); 404 otherwise."""
    parts = model.split(":")
    step: int | None = None
    if len(parts) == 6 and parts[5].startswith(CHECKPOINT_MARK):
        step = id_number(parts.pop()[len(CHECKPOINT_MARK) :])
        if step is None:
            raise _not_found(model)
    if len(parts) != 5 or parts[0] != "ft" or not parts[4].startswith("ftjob-"):
        raise _not_found(model)
    pk = id_number(parts[4][len("ftjob-") :])
    if pk is None:
        raise _not_found(model)
    try:
        ft = fine_tuning_job_get(caller, pk)
    except ApiError:
        raise _not_found(model) from None
    if ft.model_deleted_at is not None or ":".join(parts) != fine_tuned_model_id(ft):
        raise _not_found(model)
    if step is None and not model_succeeded(ft):
        raise _not_found(model)
    if step is not None and step not in {int(c["step"]) for c in checkpoints(ft)}:
        raise _not_found(model)
    return ft, step


def resolve_model(caller: Caller, model: str) -> dict[str, str]:
    """What a worker needs to answer with `model`: base model, adapter folder, quantization."""
    if model in catalog_models():
        return {"base_model": model, "adapter_dir": "", "quantization": "nf4"}
    last = model.rsplit(":", 1)[-1]
    if model.startswith("ft:") and last.startswith(RUN_MARK):
        run = _notebook_model(caller, model, last[len(RUN_MARK) :])
        return {
            "base_model": run.inputs["base_model"],
            "adapter_dir": outputs_of(run, "finetune").adapter_dir,
            "quantization": effective_hparams(run.inputs)["quantization"],
        }
    ft, step = resolve_fine_tuned(caller, model)
    run = ft.cell_run
    quantization = effective_hparams(run.inputs)["quantization"]
    if step is None:
        adapter = outputs_of(run, "finetune").adapter_dir or ""
    else:
        folder = checkpoint_dir(ft, step)
        if folder is None:
            raise _not_found(model)
        adapter = folder
    if not adapter:
        raise _not_found(model)
    return {"base_model": ft.base_model, "adapter_dir": adapter, "quantization": quantization}


def chat_completion_poll(pk: int) -> ChatCompletion:
    return ChatCompletion.objects.get(pk=pk)
