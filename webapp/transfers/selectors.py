"""Reads for Trans-LoRA: where a transfer's source adapter is, whether it can be moved,
where every adapter came from, and the transfers of a project.

The web process never imports finetune_core: the files the worker leaves beside an
adapter are checked by name here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from webapp.datasets.models import DatasetVersion
from webapp.jobs.models import Job
from webapp.projects.models import Cell, CellRun, Project, RunStatus

SEEDS = Path("transfer") / "seeds.jsonl"
DISCRIMINATOR = Path("discriminator") / "discriminator.json"


def latest_succeeded_run(*, cell_id: int | None) -> CellRun | None:
    if not cell_id:
        return None
    return (
        CellRun.objects.select_related("cell")
        .filter(cell_id=cell_id, status=RunStatus.SUCCEEDED)
        .order_by("-version")
        .first()
    )


def training_data_exists(*, run: CellRun) -> bool:
    """The file the fine-tune trained on is still there (seeds can still be kept)."""
    data = ((run.outputs or {}).get("config") or {}).get("data")
    return bool(data) and Path(data).is_file()


def transferable_files(*, run: CellRun) -> dict[str, bool]:
    folder = (run.outputs or {}).get("output_dir")
    if not folder:
        return {"seeds": False, "discriminator": False}
    return {
        "seeds": (Path(folder) / SEEDS).is_file(),
        "discriminator": (Path(folder) / DISCRIMINATOR).is_file(),
    }


def transferable_state(*, run: CellRun) -> dict[str, Any]:
    """What the run page and the transfer cell show about a fine-tune's Trans-LoRA readiness."""
    state = dict((run.outputs or {}).get("transferable") or {})
    job = Job.objects.filter(pk=state["job"]).first() if state.get("job") else None
    files = transferable_files(run=run)
    return {
        **state,
        "job_obj": job,
        "active": bool(job and not job.is_finished),
        "ready": files["seeds"] and files["discriminator"],
        "files": files,
        "data_exists": training_data_exists(run=run),
        "run": run,
    }


def transfer_source_status(*, cell: Cell) -> dict[str, Any]:
    """For a transfer cell: its source run and whether it can be transferred now."""
    source_cell = (
        Cell.objects.select_related("project")
        .filter(
            pk=cell.config.get("source_cell"),
            project__team_id=cell.project.team_id,
            kind="finetune",
        )
        .first()
    )
    run = latest_succeeded_run(cell_id=source_cell.pk) if source_cell else None
    return {
        "cell": source_cell,
        "run": run,
        "state": transferable_state(run=run) if run else None,
    }


def _dataset_step(version_id: int | None, label: str | None = None) -> dict[str, Any]:
    version = (
        DatasetVersion.objects.select_related("dataset").filter(pk=version_id).first()
        if version_id
        else None
    )
    if version is None:
        return {"kind": "dataset", "label": f"{label or 'dataset version'} (deleted)", "pk": None}
    return {"kind": "dataset", "label": str(version), "pk": version.pk}


def adapter_lineage(*, run: CellRun) -> list[dict[str, Any]]:
    """dataset version -> fine-tune -> checkpoint -> transfer(s), oldest first.

    Each step: kind, label, and pk where it links somewhere; a transfer whose source run
    was deleted falls back to the snapshot it stored when it ran.
    """
    outputs = run.outputs or {}
    if run.cell.kind == "finetune":
        final = outputs.get("final") or (outputs.get("config") or {}).get("final") or "last"
        return [
            _dataset_step(outputs.get("dataset_version"), outputs.get("dataset_label")),
            {
                "kind": "finetune",
                "label": f"{run.cell} v{run.version} on {run.inputs.get('base_model')}",
                "pk": run.pk,
            },
            {
                "kind": "checkpoint",
                "label": f"checkpoint step {final}"
                if str(final).isdigit()
                else f"adapter: {final}",
                "pk": None,
            },
        ]
    if run.cell.kind != "transfer":
        return []
    source = outputs.get("source") or {}
    parent = CellRun.objects.select_related("cell").filter(pk=source.get("run")).first()
    if parent is not None:
        steps = adapter_lineage(run=parent)
    else:
        steps = list(source.get("lineage") or [])
    if source.get("checkpoint") and steps and steps[-1]["kind"] == "checkpoint":
        steps[-1] = {"kind": "checkpoint", "label": f"checkpoint step {source['checkpoint']}"}
    target = run.inputs.get("base_model")
    steps.append(
        {"kind": "transfer", "label": f"{run.cell} v{run.version} to {target}", "pk": run.pk}
    )
    return steps


def adapter_moves(*, run: CellRun) -> list[CellRun]:
    """Transfer runs made from this fine-tune run's adapter: its lineage's other direction."""
    return list(
        CellRun.objects.select_related("cell")
        .filter(cell__kind="transfer", outputs__source__run=run.pk)
        .order_by("pk")
    )


def transfer_files(*, run: CellRun) -> list[tuple[Path, str]]:
    """(file, name in the zip) of a succeeded transfer: adapter, manifest, report.json."""
    from webapp.projects.artifacts import artifact_files

    out = (run.outputs or {}).get("output_dir")
    if run.cell.kind != "transfer" or run.status != RunStatus.SUCCEEDED or not out:
        return []
    files = artifact_files(Path(out) / "transferred")
    report = Path(out) / "report.json"
    if files and report.is_file():
        files.append((report, "report.json"))
    return files


def rebase_sources(*, project: Project, base_model: str) -> list[Cell]:
    """The fine-tune cells of the project trained on base_model, in notebook order."""
    cells = project.cells.filter(kind="finetune").order_by("position")
    return [c for c in cells if c.config.get("base_model") == base_model]


def project_transfers(*, project: Project) -> list[dict[str, Any]]:
    """Every transfer cell of the project with its latest run: the rebase results list."""
    rows = []
    cells = project.cells.filter(kind="transfer").order_by("position")
    for cell in cells.prefetch_related("runs"):
        run = max(cell.runs.all(), key=lambda r: r.version, default=None)
        source = Cell.objects.filter(pk=cell.config.get("source_cell")).first()
        accuracy = ((run.outputs or {}).get("report") or {}).get("accuracy", {}) if run else {}
        rows.append(
            {
                "cell": cell,
                "run": run,
                "source": source,
                "from": source.config.get("base_model") if source else None,
                "to": cell.config.get("base_model"),
                "accuracy": accuracy,
            }
        )
    return rows
