"""Writes for projects, cells and cell runs."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from webapp.datasets.models import Dataset
from webapp.jobs import queue, serving
from webapp.jobs.dispatch import job_enqueue_on_commit
from webapp.jobs.limits import team_job_slot_check
from webapp.jobs.models import MEMORY_ESTIMATE, Job
from webapp.jobs.services import job_cancel, job_create
from webapp.projects.cell_kinds import (
    get_kind,
    referenced_cell_ids,
    team_ref_kinds,
    team_referenced_ids,
)
from webapp.projects.estimate import ESTIMATE, preflight, steps_cap_check
from webapp.projects.models import Cell, CellRun, Project, RunStatus
from webapp.projects.routing import route_check
from webapp.projects.run_lifecycle import cell_run_requeue
from webapp.projects.run_outputs import outputs_of
from webapp.projects.selectors import finetune_dataset_version
from webapp.teams.models import Team

RESUMABLE_KINDS = ("finetune", "transfer")  # their workers continue from what is on disk


def project_create(
    *, team: Team, name: str, created_by: AbstractBaseUser, description: str = ""
) -> Project:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "A project needs a name."})
    return Project.objects.create(
        team=team, name=name[:100], description=description, created_by=created_by
    )


@transaction.atomic
def project_create_from_recipe(
    *, team: Team, recipe: dict[str, Any], created_by: AbstractBaseUser, name: str = ""
) -> Project:
    """Re-create a notebook from a checked recipe (recipes.recipe_check); all or nothing."""
    project = project_create(
        team=team,
        name=name or recipe["name"],
        description=recipe.get("description", ""),
        created_by=created_by,
    )
    made: list[Cell] = []
    for n, item in enumerate(recipe["cells"], start=1):
        spec = get_kind(item["kind"])
        config = dict(item.get("config") or {})
        for key in spec.cell_refs:
            if isinstance(config.get(key), dict):
                config[key] = made[config[key]["cell"] - 1].pk
        for key in spec.dataset_refs:
            if isinstance(config.get(key), dict):
                config[key] = _team_dataset_id(team, config[key]["dataset"], f"cells[{n}]")
        try:
            cell = cell_create(
                project=project,
                kind=item["kind"],
                config=config,
                title=item.get("title") or "",
                created_by=created_by,
            )
        except ValidationError as exc:
            raise ValidationError(f"cells[{n}] ({spec.label}): {_describe(exc)}") from None
        made.append(cell)
    return project


def _describe(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


def _team_dataset_id(team: Team, name: str, where: str) -> int:
    dataset = Dataset.objects.filter(team=team, name=name).first()
    if dataset is None:
        raise ValidationError(
            f"{where}: this team has no dataset named {name!r}. Upload it under that name, "
            "then import the recipe again."
        )
    return dataset.pk


def _clean_config(*, project: Project, kind: str, position: int, config: dict[str, Any]) -> dict:
    """Validate config with the kind's form, then re-check every reference explicitly."""
    try:
        spec = get_kind(kind)
    except LookupError as exc:
        raise ValidationError({"kind": str(exc)}) from None
    # Fields left out take the form's defaults, so services can pass partial configs.
    defaults = {k: f.initial for k, f in spec.form.base_fields.items() if f.initial is not None}
    form = spec.form(data={**defaults, **config}, project=project, position=position)
    if not form.is_valid():
        raise ValidationError(form.errors.as_data())
    cleaned = dict(form.cleaned_data)
    # The form's choices already exclude foreign ids; this guards callers that skip forms.
    for key, allowed in spec.cell_refs.items():
        ref = cleaned.get(key)
        if ref is None:
            continue
        ok = Cell.objects.filter(
            pk=ref, project=project, position__lt=position, kind__in=allowed
        ).exists()
        if not ok:
            raise ValidationError({key: "Must be an earlier cell of this notebook."})
    for key in spec.dataset_refs:
        ref = cleaned.get(key)
        if ref is not None and not Dataset.objects.filter(pk=ref, team_id=project.team_id).exists():
            raise ValidationError({key: "Must be a dataset of this team."})
    return cleaned


@transaction.atomic
def cell_create(
    *,
    project: Project,
    kind: str,
    config: dict[str, Any],
    created_by: AbstractBaseUser,
    title: str = "",
) -> Cell:
    # Lock the project so concurrent adds get distinct positions.
    Project.objects.select_for_update().filter(pk=project.pk).first()
    position = (project.cells.aggregate(n=Max("position"))["n"] or 0) + 1
    cleaned = _clean_config(project=project, kind=kind, position=position, config=config)
    cell = Cell.objects.create(
        project=project,
        position=position,
        kind=kind,
        title=title.strip()[:100],
        config=cleaned,
        created_by=created_by,
    )
    project.save(update_fields=["updated_at"])
    return cell


class CellEditConflict(ValidationError):
    """The cell was saved by someone else since the editor loaded it; nothing was saved.
    `current` is the cell as saved now."""

    def __init__(self, current: Cell, seen_version: int) -> None:
        super().__init__(
            f"Not saved: someone else saved this cell while you were editing it (you "
            f"started from version {seen_version}; it is at version {current.version} now)."
        )
        self.current = current


@transaction.atomic
def cell_update(
    *,
    cell: Cell,
    config: dict[str, Any],
    title: str | None = None,
    seen_version: int | None = None,
) -> Cell:
    """Each edit adds one to the cell's version. `seen_version`: the version the edit
    started from; another one means someone saved in between, and CellEditConflict."""
    current = Cell.objects.select_for_update().get(pk=cell.pk)
    if seen_version is not None and seen_version != current.version:
        raise CellEditConflict(current, seen_version)
    cell.config = _clean_config(
        project=cell.project, kind=cell.kind, position=cell.position, config=config
    )
    if title is not None:
        cell.title = title.strip()[:100]
    cell.version = current.version + 1
    cell.save(update_fields=["config", "title", "version", "updated_at"])
    return cell


def _dependents(cell: Cell) -> list[Cell]:
    later = cell.project.cells.filter(position__gt=cell.position)
    # Cells that may refer to this one from anywhere in the team (a transfer's source).
    anywhere = Cell.objects.filter(
        project__team_id=cell.project.team_id, kind__in=team_ref_kinds()
    ).select_related("project")
    seen: dict[int, Cell] = {}
    for c in [*later, *anywhere]:
        if c.pk != cell.pk and cell.pk in referenced_cell_ids(c) | team_referenced_ids(c):
            seen[c.pk] = c
    return list(seen.values())


@transaction.atomic
def cell_delete(*, cell: Cell) -> None:
    dependents = _dependents(cell)
    if dependents:
        names = ", ".join(
            str(c) if c.project_id == cell.project_id else f"{c} (notebook “{c.project}”)"
            for c in dependents
        )
        raise ValidationError(f"Other cells use this one: {names}. Change them first.")
    cell.delete()


@transaction.atomic
def cell_move(*, cell: Cell, direction: int) -> Cell:
    """Swap with the neighbour above (-1) or below (+1), unless that breaks a reference."""
    if direction not in (-1, 1):
        raise ValidationError("direction must be -1 or 1")
    siblings = cell.project.cells.select_for_update()
    if direction < 0:
        neighbour = siblings.filter(position__lt=cell.position).order_by("-position").first()
    else:
        neighbour = siblings.filter(position__gt=cell.position).order_by("position").first()
    if neighbour is None:
        return cell
    first, second = (neighbour, cell) if direction < 0 else (cell, neighbour)
    if first.pk in referenced_cell_ids(second):
        raise ValidationError(f"{second} uses {first}, so it must stay below it.")
    cell.position, neighbour.position = neighbour.position, cell.position
    Cell.objects.bulk_update([cell, neighbour], ["position"])
    return cell


@transaction.atomic
def cell_run_create(*, cell: Cell, created_by: AbstractBaseUser) -> CellRun:
    """Queue a new run version; earlier runs and their outputs are kept."""
    spec = get_kind(cell.kind)
    if not spec.runnable:
        raise ValidationError(f"{spec.label} cells do not run.")
    # References may have gone stale since the cell was saved (dataset deleted, ...).
    inputs = _clean_config(
        project=cell.project, kind=cell.kind, position=cell.position, config=cell.config
    )
    known: dict[str, Any] = {}
    if cell.kind == "finetune":
        version = finetune_dataset_version(cell=cell)
        steps_cap_check(inputs, version)
        found = preflight(inputs, version)  # named if its worker keeps dying (job_died_text)
        route_check(found.route if found else None)  # fits no worker: refused, saying why
        # The estimate as queued, with its range and basis: the /v1 job shows it.
        known = {MEMORY_ESTIMATE: found.memory_bytes, ESTIMATE: found.as_dict()} if found else {}
        inputs = _checkpoints_capped(inputs)
    Cell.objects.select_for_update().filter(pk=cell.pk).first()
    version = (cell.runs.aggregate(n=Max("version"))["n"] or 0) + 1
    run = CellRun.objects.create(cell=cell, version=version, inputs=inputs, created_by=created_by)
    job = job_create(
        team=cell.project.team,
        kind=f"cell.{cell.kind}",
        params={"cell_run_id": run.pk, **known},
        created_by=created_by,
    )
    run.job = job
    run.save(update_fields=["job"])
    routed = (known.get(ESTIMATE) or {}).get("queue")  # a fine-tune: the queue that fits it
    if spec.served and serving.enabled():
        routed = queue.DEFAULT
    job_enqueue_on_commit(
        job=job, task_path=queue.RUN_CELL, args=[run.pk], queue=routed or spec.queue
    )
    return run


def _checkpoints_capped(inputs: dict[str, Any]) -> dict[str, Any]:
    """The operator's TEAM_CHECKPOINTS_KEPT travels in the run's inputs to the engine."""
    cap = settings.TEAM_CHECKPOINTS_KEPT
    return {**inputs, "keep_checkpoints": cap} if cap else inputs


def _run_job(run: CellRun) -> Job:
    if run.job_id is None:
        raise ValidationError("This run has no job.")
    return Job.objects.get(pk=run.job_id)


@transaction.atomic
def cell_run_cancel(*, run: CellRun, by: AbstractBaseUser) -> CellRun:
    """Cancel the run's job (the run follows it: cell_runs_follow_job); the worker stops at
    its next step, saving a checkpoint."""
    job_cancel(job=_run_job(run), by=by)
    run.refresh_from_db()
    return run


@transaction.atomic
def cell_run_resume(*, run: CellRun, by: AbstractBaseUser) -> CellRun:
    """Queue a cancelled or failed fine-tune or transfer again; it continues from its last
    checkpoint (a transfer: from the phases it finished)."""
    if run.cell.kind not in RESUMABLE_KINDS:
        raise ValidationError("Only fine-tune and transfer runs can be resumed.")
    team_job_slot_check(team=run.cell.project.team)
    reason = f"Resume requested by {by.get_username()}"
    job = cell_run_requeue(run=run, job=_run_job(run), reason=reason)
    task = job.params.get("_task") or {"path": queue.RUN_CELL, "args": [run.pk], "queue": queue.GPU}
    job_enqueue_on_commit(job=job, task_path=task["path"], args=task["args"], queue=task["queue"])
    run.refresh_from_db()
    return run


@transaction.atomic
def cell_run_select_final(*, run: CellRun, which: str, by: AbstractBaseUser) -> Job:
    """Ask a worker to make checkpoint `which` (a step, "last" or "best") the final adapter."""
    if run.cell.kind != "finetune" or run.status != RunStatus.SUCCEEDED:
        raise ValidationError("Only a finished fine-tune run has checkpoints to choose from.")
    steps = {str(c["step"]) for c in outputs_of(run).checkpoints}
    if which not in steps | {"last", "best"}:
        raise ValidationError(f"There is no checkpoint {which!r} in this run.")
    job = job_create(
        team=run.cell.project.team,
        kind="select_final",
        params={"cell_run_id": run.pk, "which": which},
        created_by=by,
    )
    job_enqueue_on_commit(job=job, task_path=queue.SELECT_FINAL, args=[run.pk, which, job.pk])
    return job
