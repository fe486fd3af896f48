"""Writes for Trans-LoRA in the notebook: keeping a fine-tune transferable, and re-basing
every adapter of a project."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from webapp.jobs import queue
from webapp.jobs.dispatch import job_enqueue_on_commit
from webapp.jobs.models import Job
from webapp.jobs.services import job_create
from webapp.projects.models import Cell, CellRun, Project, RunStatus
from webapp.projects.run_lifecycle import cell_run_outputs_merge
from webapp.projects.services import cell_create, cell_run_create
from webapp.transfers.selectors import (
    latest_succeeded_run,
    rebase_sources,
    training_data_exists,
    transferable_state,
)


@transaction.atomic
def transferable_job_create(*, run: CellRun, created_by: AbstractBaseUser | None) -> Job:
    """Queue keeping seeds + training the discriminator beside a finished fine-tune."""
    if run.cell.kind != "finetune" or run.status != RunStatus.SUCCEEDED:
        raise ValidationError("Only a finished fine-tune run can be made transferable.")
    state = transferable_state(run=run)
    if state["active"]:
        raise ValidationError("This adapter is being made transferable already.")
    if not training_data_exists(run=run):
        raise ValidationError(
            "The dataset this adapter was trained on is gone, so no seeds or discriminator "
            "can be made for it any more."
        )
    job = job_create(
        team=run.cell.project.team,
        kind="transferable",
        params={"cell_run_id": run.pk},
        created_by=created_by,
    )
    job_enqueue_on_commit(job=job, task_path=queue.MAKE_TRANSFERABLE, args=[run.pk, job.pk])
    cell_run_outputs_merge(
        run_id=run.pk, values={"transferable": {"status": "queued", "job": job.pk}}
    )
    return job


@dataclass
class RebaseResult:
    created: list[Cell] = field(default_factory=list)
    skipped: list[tuple[Cell, str]] = field(default_factory=list)


def transfers_rebase_project(
    *,
    project: Project,
    source_model: str,
    target_model: str,
    created_by: AbstractBaseUser,
    config: dict[str, Any] | None = None,
) -> RebaseResult:
    """One transfer cell per fine-tune adapter on source_model, each queued to run.

    Cells whose adapter cannot move (no finished run, not transferable) are skipped with
    the reason, so the rest still go.
    """
    if source_model == target_model:
        raise ValidationError("Pick a target base model other than the source one.")
    sources = rebase_sources(project=project, base_model=source_model)
    if not sources:
        raise ValidationError(f"No fine-tune cell in this notebook uses {source_model}.")
    result = RebaseResult()
    for source in sources:
        run = latest_succeeded_run(cell_id=source.pk)
        if run is None:
            result.skipped.append((source, "it has no finished run"))
            continue
        if not transferable_state(run=run)["ready"]:
            result.skipped.append((source, "it has no seeds and discriminator"))
            continue
        cell = cell_create(
            project=project,
            kind="transfer",
            config={**(config or {}), "source_cell": source.pk, "base_model": target_model},
            title=f"{source} → {target_model}"[:100],
            created_by=created_by,
        )
        cell_run_create(cell=cell, created_by=created_by)
        result.created.append(cell)
    return result


def transferable_after_finetune(*, run_id: int) -> Job | None:
    """A fine-tune with "keep transferable" succeeded: queue its discriminator job.

    Never fails the fine-tune: a reason it cannot be done lands in outputs["transferable"].
    """
    run = CellRun.objects.select_related("cell__project__team", "created_by").get(pk=run_id)
    try:
        return transferable_job_create(run=run, created_by=run.created_by)
    except ValidationError as exc:
        error = " ".join(exc.messages)
        cell_run_outputs_merge(
            run_id=run.pk, values={"transferable": {"status": "failed", "error": error}}
        )
        return None
