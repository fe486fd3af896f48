"""Reads for projects and notebooks."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from webapp.datasets.models import Dataset, DatasetVersion, VersionStatus
from webapp.jobs.models import EventLevel, Job, JobEvent
from webapp.projects.cell_kinds import REGISTRY
from webapp.projects.models import Cell, CellRun, Project
from webapp.projects.run_outputs import FinetuneOutputs, outputs_of
from webapp.teams.models import Team


def project_list_for_team(*, team: Team) -> QuerySet[Project]:
    return team.projects.all()


def notebook_cells(*, project: Project) -> QuerySet[Cell]:
    """Cells in order, each with its runs newest first (all versions are kept)."""
    runs = CellRun.objects.select_related("job").order_by("-version")
    return project.cells.order_by("position", "id").prefetch_related(
        Prefetch("runs", queryset=runs)
    )


def cell_run_find(*, run_id: int) -> CellRun | None:
    """A run by id with its cell (workers get ids), or None when it was deleted."""
    return CellRun.objects.select_related("cell").filter(pk=run_id).first()


def dataset_cell_version(*, cell: Cell) -> DatasetVersion | None:
    """The version a dataset cell stands for: the pinned one, else the latest valid one."""
    dataset_id = cell.config.get("dataset")
    if not dataset_id:
        return None
    versions = DatasetVersion.objects.filter(dataset_id=dataset_id).select_related("dataset")
    pinned = cell.config.get("version")
    if pinned:
        return versions.filter(version=pinned).first()
    valid = versions.filter(status=VersionStatus.VALID).order_by("-version").first()
    return valid or versions.order_by("-version").first()


def dataset_cell_deleted(*, cell: Cell) -> bool:
    """The dataset (or the pinned version) this cell names was deleted, e.g. through /v1/files."""
    dataset_id, pinned = cell.config.get("dataset"), cell.config.get("version")
    if not dataset_id:
        return False
    if pinned:
        return not DatasetVersion.objects.filter(dataset_id=dataset_id, version=pinned).exists()
    return not Dataset.objects.filter(pk=dataset_id).exists()


def finetune_dataset_version(*, cell: Cell) -> DatasetVersion | None:
    ref = cell.config.get("dataset_cell")
    source = Cell.objects.filter(pk=ref, project_id=cell.project_id, kind="dataset").first()
    return dataset_cell_version(cell=source) if source else None


def run_history(*, run: CellRun, job: Job | None) -> list[dict[str, Any]]:
    """Loss points: the run's full history once finished, else the step/eval events so far."""
    outputs = outputs_of(run)
    history = outputs.history if isinstance(outputs, FinetuneOutputs) else None
    if history:
        return history
    if job is None:
        return []
    points: dict[int, dict[str, Any]] = {}
    events = job.events.filter(data__kind__in=["step", "eval"]).values_list("data", flat=True)
    for data in events:
        point = points.setdefault(int(data.get("step", 0)), {"step": int(data.get("step", 0))})
        for key in ("train_loss", "val_loss"):
            if data.get(key) is not None:
                point[key] = data[key]
    return [points[s] for s in sorted(points)]


def run_log(*, job: Job, limit: int = 50) -> list[JobEvent]:
    """The event log without the per-step chatter (that feeds the chart)."""
    events = job.events.exclude(level=EventLevel.DEBUG).order_by("-created_at", "-id")[:limit]
    return list(reversed(events))


def cell_run_blocker(*, cell: Cell) -> str | None:
    """Why the cell cannot run now (its Run button is disabled, a POST is refused), or None."""
    kind = REGISTRY.get(cell.kind)
    return kind.blocker(cell) if kind and kind.blocker else None


def finetune_blocker(cell: Cell) -> str | None:
    """A fine-tune cannot run on data that was deleted (e.g. a /v1 file): its worker would
    fail at once. Data still validating is no blocker: the run waits for it."""
    for key in ("dataset_cell", "val_dataset_cell"):
        ref = cell.config.get(key)
        source = Cell.objects.filter(pk=ref, kind="dataset").first() if ref else None
        if source is not None and dataset_cell_deleted(cell=source):
            return (
                f"The data of {source} was deleted: pick or upload another dataset in that "
                "cell, then run this one."
            )
    return None
