"""Writes for /v1: files, fine-tuning jobs, models, chat completions.

Fine-tuning jobs are a dataset cell and a fine-tune cell in the team's API notebook,
run through the same services as the notebook UI, so the same worker code trains them.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from finetune_core.contracts.train import openai_hyperparameters, setting_aliases
from webapp.api.models import (
    ApiProject,
    ChatCompletion,
    CompletionStatus,
    FineTuningJob,
)
from webapp.datasets.models import Dataset, DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create
from webapp.jobs import queue
from webapp.jobs.dispatch import job_enqueue_on_commit
from webapp.jobs.models import Job
from webapp.jobs.services import job_create, job_event_add
from webapp.projects.finetune_config import (
    DEFAULT_PRESET,
    PARAM_NAMES,
    PRESETS,
    TARGET_MODULES,
    data_method_problem,
)
from webapp.projects.models import Cell, Project
from webapp.projects.services import (
    cell_create,
    cell_run_cancel,
    cell_run_create,
    cell_run_resume,
    project_create,
)
from webapp.teams.models import Team

API_PROJECT_NAME = "API fine-tuning jobs"


# --- files ------------------------------------------------------------------------------


def api_file_create(
    *, team: Team, created_by: AbstractBaseUser, upload: UploadedFile, purpose: str
) -> DatasetVersion:
    """An uploaded file becomes a version of the team dataset named after the file."""
    if purpose != "fine-tune":
        raise ValidationError({"purpose": "Only purpose 'fine-tune' is supported."})
    name = (upload.name or "upload.jsonl")[:100]
    return dataset_version_create(team=team, name=name, upload=upload, created_by=created_by)


@transaction.atomic
def api_file_delete(*, version: DatasetVersion) -> None:
    """Delete the version and its file; the dataset goes too when it has no versions left."""
    dataset_id = version.dataset_id
    version.file.delete(save=False)
    version.delete()
    if not DatasetVersion.objects.filter(dataset_id=dataset_id).exists():
        Dataset.objects.filter(pk=dataset_id).delete()


# --- fine-tuning jobs -------------------------------------------------------------------

# OpenAI's hyperparameter names -> the fine-tune cell's config keys (declared in the contract).
HYPER = openai_hyperparameters()
EXTRA_KEYS = frozenset(PARAM_NAMES) | {"preset", "keep_transferable"}
# Short names a client may use in `tunebook` for the library's settings.
EXTRA_ALIASES = setting_aliases()
# Set through OpenAI's `method` only, so the job object always says what trained.
METHOD_KEYS = frozenset({"training_method", "beta"})


def _api_project(team: Team, user: AbstractBaseUser) -> Project:
    """The team's API notebook, made by its first job. The team's row is locked first: two
    first jobs at once both found no notebook (a lock on no row waits for nothing) and
    the second failed on the one-per-team constraint; now it waits and finds the first's."""
    Team.objects.select_for_update().only("pk").get(pk=team.pk)
    link = ApiProject.objects.select_related("project").filter(team=team).first()
    if link is not None:
        return link.project
    project = project_create(
        team=team,
        name=API_PROJECT_NAME,
        created_by=user,
        description="Cells created by the /v1/fine_tuning/jobs API, one pair per job.",
    )
    ApiProject.objects.create(team=team, project=project)
    return project


def finetune_config(
    *,
    model: str,
    hyperparameters: dict[str, Any],
    extras: dict[str, Any],
    seed: int | None,
    training_method: str = "supervised",
) -> dict[str, Any]:
    """The fine-tune cell's config from OpenAI hyperparameters ("auto" = preset default)."""
    extras = {EXTRA_ALIASES.get(k, k): v for k, v in extras.items()}
    unknown = sorted(set(extras) - EXTRA_KEYS)
    if unknown:
        raise ValidationError({"tunebook": f"Unknown Tunebook option(s): {', '.join(unknown)}."})
    if METHOD_KEYS & set(extras):
        raise ValidationError(
            {
                "tunebook": "Give the training method as method.type ('supervised' or 'dpo') and "
                "beta as method.dpo.hyperparameters.beta, not in tunebook."
            }
        )
    config: dict[str, Any] = {**extras, "training_method": training_method}
    if "target_modules" in config:
        config["target_modules"] = _target_modules(config["target_modules"])
    preset = config.setdefault("preset", DEFAULT_PRESET)
    if preset not in PRESETS:
        raise ValidationError({"tunebook.preset": f"Unknown preset {preset!r}."})
    for name, key in HYPER.items():
        value = hyperparameters.get(name, "auto")
        if value != "auto":
            config[key] = value
    multiplier = hyperparameters.get("learning_rate_multiplier", "auto")
    if multiplier != "auto":
        if not isinstance(multiplier, int | float) or multiplier <= 0:
            raise ValidationError({"learning_rate_multiplier": "Must be a positive number."})
        config["learning_rate"] = PRESETS[preset]["learning_rate"] * float(multiplier)
    if seed is not None:
        config["seed"] = seed
    return {"base_model": model, **config}


def _target_modules(value: Any) -> str:
    """A target_modules choice, given by its name or as the list of layers it stands for."""
    for name, layers in TARGET_MODULES.items():
        if value in (name, layers, [layers]):
            return name
    choices = ", ".join(repr(k) for k in TARGET_MODULES)
    raise ValidationError({"target_modules": f"Use one of {choices}, or its list of layers."})


def _ready_file(version: DatasetVersion, field: str, training_method: str) -> str:
    """The file's `file-N`, once validated and in the format the method trains on."""
    ref = f"file-{version.pk}"
    if version.status == VersionStatus.INVALID:
        raise ValidationError({field: f"File {ref} did not pass validation."})
    if version.status != VersionStatus.VALID:
        raise ValidationError({field: f"File {ref} is not ready yet; try again soon."})
    problem = data_method_problem(training_method, (version.report or {}).get("format"), ref)
    if problem:
        raise ValidationError({field: problem})
    return ref


@transaction.atomic
def fine_tuning_job_create(
    *,
    team: Team,
    created_by: AbstractBaseUser,
    model: str,
    training_file: DatasetVersion,
    suffix: str,
    seed: int | None,
    metadata: dict[str, str],
    hyperparameters: dict[str, Any],
    extras: dict[str, Any],
    validation_file: DatasetVersion | None = None,
    training_method: str = "supervised",
    start: FineTuningJob | None = None,
) -> FineTuningJob:
    """`start`: the finished job an `ft:` model names; the new job continues from its
    adapter (its cell, earlier in the API notebook) on the same base model."""
    requested_model, model = model, start.base_model if start is not None else model
    config = finetune_config(
        model=model,
        hyperparameters=hyperparameters,
        extras=extras,
        seed=seed,
        training_method=training_method,
    )
    ref = _ready_file(training_file, "training_file", training_method)
    val_ref = (
        _ready_file(validation_file, "validation_file", training_method)
        if validation_file
        else None
    )
    project = _api_project(team, created_by)
    if start is not None and start.cell_run is not None:
        config["init_cell"] = start.cell_run.cell_id
    dataset_cell = _file_cell(project, training_file, ref, created_by)
    if validation_file is not None:
        val_cell = _file_cell(project, validation_file, val_ref, created_by)
        config["val_dataset_cell"] = val_cell.pk
    cell = cell_create(
        project=project,
        kind="finetune",
        config={"dataset_cell": dataset_cell.pk, **config},
        created_by=created_by,
        title=f"{requested_model} on {ref}" + (f" ({suffix})" if suffix else ""),
    )
    run = cell_run_create(cell=cell, created_by=created_by)
    return FineTuningJob.objects.create(
        team=team,
        created_by=created_by,
        base_model=model,
        suffix=suffix,
        training_file=training_file,
        training_file_ref=ref,
        seed=int(config.get("seed") or 0),
        metadata=metadata,
        requested={
            "model": requested_model,
            "method": training_method,
            "hyperparameters": hyperparameters,
            "tunebook": extras,
            "validation_file": val_ref,
        },
        cell_run=run,
        job=run.job,
    )


def _file_cell(
    project: Project, version: DatasetVersion, ref: str, created_by: AbstractBaseUser
) -> Cell:
    return cell_create(
        project=project,
        kind="dataset",
        config={"dataset": version.dataset_id, "version": version.version},
        created_by=created_by,
        title=ref,
    )


def _job(ft: FineTuningJob) -> Job:
    if ft.job_id is None or ft.cell_run_id is None:
        raise ValidationError("This job has no run any more.")
    return Job.objects.get(pk=ft.job_id)


@transaction.atomic
def fine_tuning_job_cancel(*, ft: FineTuningJob, by: AbstractBaseUser) -> FineTuningJob:
    job = _job(ft)
    if ft.paused_at is not None:  # paused = already stopped; cancelling ends it for good
        FineTuningJob.objects.filter(pk=ft.pk).update(paused_at=None)
        job_event_add(job=job, message=f"Job cancelled by {by.get_username()}")
    else:
        cell_run_cancel(run=ft.cell_run, by=by)
    ft.refresh_from_db()
    return ft


@transaction.atomic
def fine_tuning_job_pause(*, ft: FineTuningJob, by: AbstractBaseUser) -> FineTuningJob:
    """Stop at the next step with a checkpoint; resume continues from it."""
    if ft.paused_at is not None:
        raise ValidationError("This job is already paused.")
    cell_run_cancel(run=ft.cell_run, by=by)
    FineTuningJob.objects.filter(pk=ft.pk).update(paused_at=timezone.now())
    job_event_add(job=_job(ft), message=f"Job paused by {by.get_username()}")
    ft.refresh_from_db()
    return ft


@transaction.atomic
def fine_tuning_job_resume(*, ft: FineTuningJob, by: AbstractBaseUser) -> FineTuningJob:
    if ft.paused_at is None:
        raise ValidationError("Only a paused job can be resumed.")
    FineTuningJob.objects.filter(pk=ft.pk).update(paused_at=None)
    cell_run_resume(run=ft.cell_run, by=by)
    ft.refresh_from_db()
    return ft


def fine_tuned_model_delete(*, ft: FineTuningJob) -> None:
    FineTuningJob.objects.filter(pk=ft.pk).update(model_deleted_at=timezone.now())


# --- chat completions -------------------------------------------------------------------


@transaction.atomic
def chat_completion_create(
    *,
    team: Team,
    created_by: AbstractBaseUser,
    model: str,
    target: dict[str, str],
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: list[str] | None = None,
    serving: bool = False,
) -> ChatCompletion:
    """Queue a generation on a worker; the view follows the row as its text grows. With
    `serving`, only the record: the caller sends it to the serving process (no job)."""
    job = None if serving else job_create(team=team, kind="api.chat", created_by=created_by)
    completion = ChatCompletion.objects.create(
        team=team,
        created_by=created_by,
        model=model,
        base_model=target["base_model"],
        adapter_dir=target.get("adapter_dir") or "",
        quantization=target.get("quantization") or "nf4",
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=stop or [],
        job=job,
    )
    if job is None:
        return completion
    job.params = {"chat_completion_id": completion.pk}
    job_enqueue_on_commit(job=job, task_path=queue.CHAT_COMPLETION, args=[completion.pk])
    return completion


def chat_completion_start(*, completion_id: int) -> None:
    """Used by the worker; a redelivered task starts the text over."""
    ChatCompletion.objects.filter(pk=completion_id).update(status=CompletionStatus.RUNNING, text="")


def chat_completion_grow(*, completion_id: int, text: str) -> None:
    ChatCompletion.objects.filter(pk=completion_id).update(text=text)


def chat_completion_finish(*, completion_id: int, result: dict[str, Any]) -> None:
    ChatCompletion.objects.filter(pk=completion_id).update(
        status=CompletionStatus.SUCCEEDED,
        text=result["text"],
        prompt_tokens=result.get("prompt_tokens") or 0,
        completion_tokens=result.get("completion_tokens") or 0,
        finish_reason=result.get("finish_reason") or "stop",
        served_by=result.get("served_by") or "",
        generate_s=result.get("generate_s"),
    )


def chat_completion_fail(*, completion_id: int, error: str, unless_settled: bool = False) -> None:
    rows = ChatCompletion.objects.filter(pk=completion_id)
    if unless_settled:  # a late outcome from elsewhere must not overwrite a written one
        rows = rows.filter(status__in=(CompletionStatus.QUEUED, CompletionStatus.RUNNING))
    rows.update(status=CompletionStatus.FAILED, error=error)
