"""Job names for people: "Fine-tune · cell 3 in Demo", not the internal kind `cell.finetune #2`."""

from __future__ import annotations

from django.forms.utils import pretty_name

from webapp.datasets.models import DatasetVersion
from webapp.jobs.models import Job
from webapp.projects.cell_kinds import REGISTRY
from webapp.projects.models import CellRun

# Jobs that are not a cell's own run (those take the cell kind's label).
KIND_LABELS = {
    "select_final": "Make a checkpoint final",
    "transferable": "Keep transferable (seeds and discriminator)",
    "export": "Export",
    "validate_dataset": "Validate dataset",
    "api.chat": "Chat (API)",
}


def _kind_label(kind: str) -> str:
    if kind.startswith("cell.") and (spec := REGISTRY.get(kind.removeprefix("cell."))):
        return spec.label
    return KIND_LABELS.get(kind) or pretty_name(kind.replace(".", " "))


def _subject(job: Job) -> str:
    params = job.params or {}
    if run_id := params.get("cell_run_id"):
        run = CellRun.objects.select_related("cell__project").filter(pk=run_id).first()
        if run is not None:
            return f"cell {run.cell.position} in {run.cell.project} (run v{run.version})"
    if version_id := params.get("dataset_version_id"):
        version = DatasetVersion.objects.select_related("dataset").filter(pk=version_id).first()
        if version is not None:
            return str(version)
    return ""


def job_title(job: Job) -> str:
    return " · ".join(part for part in (_kind_label(job.kind), _subject(job)) if part)
