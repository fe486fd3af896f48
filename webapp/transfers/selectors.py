"""Reads for Trans-LoRA: where a transfer's source adapter is, whether it can be moved,
where every adapter came from, and the transfers of a project.

The files the worker leaves beside an adapter are found through the engine's torch-free
layout contract (finetune_core.contracts.layout).
"""

from __future__ import annotations

from typing import Any

from finetune_core.contracts.layout import DISCRIMINATOR, SEEDS, TRANSFER_REPORT, TRANSFERRED
from webapp.core import storage
from webapp.datasets.models import DatasetVersion
from webapp.jobs.models import Job
from webapp.projects.models import Cell, CellRun, Project, RunStatus
from webapp.projects.run_outputs import FinetuneOutputs, TransferOutputs, outputs_of


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
    data = (outputs_of(run).config or {}).get("data")  # the upload's storage key
    return bool(data) and storage.exists(data, store=storage.uploads())


def transferable_files(*, run: CellRun) -> dict[str, bool]:
    folder = outputs_of(run).output_dir
    if not folder:
        return {"seeds": False, "discriminator": False}
    return {
        "seeds": storage.exists(storage.join(folder, str(SEEDS))),
        "discriminator": storage.exists(storage.join(folder, str(DISCRIMINATOR))),
    }


def transferable_state(*, run: CellRun) -> dict[str, Any]:
    """What the run page and the transfer cell show about a fine-tune's Trans-LoRA readiness."""
    state = dict(outputs_of(run).transferable or {})
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


def transfer_blocker(*, cell: Cell, source: dict[str, Any]) -> str | None:
    """Why this transfer cell cannot run now (its Run button is disabled), or None."""
    if source["cell"] is None:
        return "The source fine-tune cell is gone: pick another."
    if source["run"] is None:
        return f"The source {source['cell']} has no finished run yet: run it first."
    state = source["state"]
    if state["ready"] or state["active"]:
        return None
    if cell.config.get("unfiltered") and state["files"]["seeds"]:
        return None  # an unfiltered transfer needs only the seeds
    return "Its source adapter is not transferable yet: the cell says why and how to fix it."


def _origin_steps(origin: dict[str, Any]) -> list[dict[str, Any]]:
    """What a version Tunebook made came from: the evaluation whose verdicts and votes
    became preference data (its run's page links to the comparison)."""
    if origin.get("kind") != "evaluation":
        return []
    label = origin.get("label") or "evaluation"
    if not CellRun.objects.filter(pk=origin.get("run")).exists():
        return [{"kind": "evaluation", "label": f"{label} (deleted)", "pk": None}]
    return [{"kind": "evaluation", "label": label, "pk": origin["run"]}]


def dataset_lineage(*, version_id: int | None, label: str | None = None) -> list[dict[str, Any]]:
    """The dataset version's step, after the steps it came from."""
    version = (
        DatasetVersion.objects.select_related("dataset").filter(pk=version_id).first()
        if version_id
        else None
    )
    if version is None:
        return [{"kind": "dataset", "label": f"{label or 'dataset version'} (deleted)", "pk": None}]
    step = {"kind": "dataset", "label": str(version), "pk": version.pk}
    return [*_origin_steps(version.origin or {}), step]


def run_lineage(*, run: CellRun) -> list[dict[str, Any]]:
    """Where the run's adapter came from, then the evaluations that compared it: the loop
    evaluation -> preference data -> DPO fine-tune -> new evaluation, for the pages."""
    return [*adapter_lineage(run=run), *evaluated_steps(run=run)]


def evaluated_steps(*, run: CellRun) -> list[dict[str, Any]]:
    """The succeeded evaluations of the team whose candidates include this run's adapter
    (the worker records them in EvaluationOutputs.candidate_runs), oldest first."""
    evaluations = (
        CellRun.objects.select_related("cell")
        .filter(
            cell__kind="evaluation",
            cell__project__team_id=run.cell.project.team_id,
            status=RunStatus.SUCCEEDED,
            outputs__candidate_runs__has_key=str(run.pk),
        )
        .order_by("pk")
    )
    return [_evaluation_step(ev) for ev in evaluations]


def _evaluation_step(run: CellRun) -> dict[str, Any]:
    compared = " vs ".join(outputs_of(run, "evaluation").candidates or [])
    label = f"{run.cell} v{run.version}" + (f": {compared}" if compared else "")
    return {"kind": "evaluation", "label": label, "pk": run.pk}


def evaluation_lineage(*, run: CellRun) -> list[list[dict[str, Any]]]:
    """For an evaluation run: where each adapter it compared came from, ending with this
    evaluation (one chain per compared fine-tune or transfer run)."""
    compared = outputs_of(run, "evaluation").candidate_runs or {}
    sources = CellRun.objects.select_related("cell").in_bulk([int(pk) for pk in compared])
    chains = []
    for pk, labels in compared.items():
        source = sources.get(int(pk))
        start = (
            adapter_lineage(run=source)
            if source is not None
            else [{"kind": "finetune", "label": f"{', '.join(labels)} (deleted)", "pk": None}]
        )
        chains.append([*start, _evaluation_step(run)])
    return chains


def adapter_lineage(*, run: CellRun) -> list[dict[str, Any]]:
    """Where an adapter came from: (evaluation ->) dataset version -> fine-tune ->
    checkpoint -> transfer(s), oldest first (a transfer stores it as it ran).

    Each step: kind, label, and pk where it links somewhere; a transfer whose source run
    was deleted falls back to the snapshot it stored when it ran.
    """
    outputs = outputs_of(run)
    if isinstance(outputs, FinetuneOutputs):
        final = outputs.final or (outputs.config or {}).get("final") or "last"
        # The worker records the version when it takes the run: a queued run has none yet.
        known = outputs.dataset_version is not None or outputs.dataset_label
        return [
            *(
                dataset_lineage(version_id=outputs.dataset_version, label=outputs.dataset_label)
                if known
                else []
            ),
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
    if not isinstance(outputs, TransferOutputs):
        return []
    source = outputs.source or {}
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


def transfer_files(*, run: CellRun) -> list[tuple[str, str]]:
    """(storage key, name in the zip) of a succeeded transfer: adapter, manifest, report."""
    from webapp.projects.artifacts import artifact_files

    out = outputs_of(run).output_dir if run.cell.kind == "transfer" else None
    if run.status != RunStatus.SUCCEEDED or not out:
        return []
    files = artifact_files(storage.join(out, TRANSFERRED))
    report = storage.join(out, TRANSFER_REPORT)
    if files and storage.exists(report):
        files.append((report, TRANSFER_REPORT))
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
        report = outputs_of(run, "transfer").report if run else None
        accuracy = (report or {}).get("accuracy", {})
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
