"""The loop from the comparison view back into training, on a real Celery worker: a
comparison's verdicts become preference data ("Make preference data"), a DPO cell trains on
it, a new evaluation compares the DPO model with the base, and the DPO run's lineage reads
evaluation -> preference data -> DPO fine-tune -> new evaluation."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from django.utils.timezone import now

from tests.web.conftest import client_for
from tests.web.test_finetune_worker import FAST, finished, job_of, run_cell, start_worker
from tests.web.test_preference_data import answer, judgment, result_dict
from tests.web.worker_harness import wait_for
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.evaluations.models import Evaluation
from webapp.evaluations.services import evaluation_store
from webapp.jobs.models import Job, JobStatus
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.services import cell_create, cell_run_create, project_create
from webapp.transfers.selectors import evaluation_lineage, run_lineage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
__all__ = ["start_worker"]  # the worker fixture, shared with the fine-tune tests

ITEMS = [f"q{i}" for i in range(12)]


def judged_result() -> dict[str, Any]:
    """A stored comparison of base and tuned: the judge prefers tuned in both orders on
    twelve prompts, so every pair becomes a preference pair."""
    result = result_dict()
    result["items"] = [{"id": i, "category": "", "prompt": f"What is {i} plus one?"} for i in ITEMS]
    result["answers"] = {
        "base": {i: answer(f"{i} plus two") for i in ITEMS},
        "tuned": {i: answer(f"{i} plus one") for i in ITEMS},
    }
    result["judgments"] = [
        {
            "item_id": i,
            "a": "base",
            "b": "tuned",
            "outcome": "b",
            "inconsistent": False,
            "prompt_version": "pairwise@v1",
            "ab": judgment("B"),
            "ba": judgment("A"),
        }
        for i in ITEMS
    ]
    return result


def test_comparison_to_preference_data_to_dpo_to_a_new_evaluation(
    start_worker, team, owner, editor, viewer
) -> None:
    project = project_create(team=team, name="Loop", created_by=owner)
    task = {"source": "bigbench", "bigbench_task": "arithmetic-2_digit_addition"}
    config = {**task, "base_model": "tiny-llama", "base_model_2": "tiny-llama"}
    first_cell = cell_create(project=project, kind="evaluation", config=config, created_by=owner)
    first = cell_run_create(cell=first_cell, created_by=owner)
    # The comparison as the worker stores it; its job is done, so the worker started
    # below declines its task instead of evaluating again.
    CellRun.objects.filter(pk=first.pk).update(status=RunStatus.SUCCEEDED)
    Job.objects.filter(pk=first.job_id).update(status=JobStatus.SUCCEEDED, finished_at=now())
    ev = evaluation_store(run=first, result=judged_result(), mode="pairwise")
    worker = start_worker()

    # "Make preference data" on the comparison page; the worker validates the pairs.
    made = client_for(editor).post(
        reverse("evaluation_preference_data", args=[ev.pk]), {"name": "Loop pairs"}
    )
    assert made.status_code == 302
    version = DatasetVersion.objects.get(dataset__name="Loop pairs")
    wait_for(
        lambda: (
            DatasetVersion.objects.get(pk=version.pk).status != VersionStatus.UPLOADED
            and DatasetVersion.objects.get(pk=version.pk).status != VersionStatus.VALIDATING
        ),
        timeout=60,
        what="validation of the preference data",
        worker=worker,
    )
    version.refresh_from_db()
    assert version.status == VersionStatus.VALID and version.n_examples == 12, version.report

    # A DPO cell on it, trained by the worker.
    pairs = cell_create(
        project=project, kind="dataset", config={"dataset": version.dataset_id}, created_by=owner
    )
    dpo_config = {**FAST, "dataset_cell": pairs.pk, "training_method": "dpo", "max_steps": 2}
    dpo = cell_create(project=project, kind="finetune", config=dpo_config, created_by=owner)
    dpo_run = run_cell(dpo, editor)
    wait_for(finished(dpo_run), timeout=150, what="DPO training", worker=worker)
    dpo_run = CellRun.objects.get(pk=dpo_run.pk)
    assert dpo_run.status == RunStatus.SUCCEEDED, (job_of(dpo_run).error, worker.tail())

    # A new evaluation compares the DPO model with the base (exact match: no judge needed).
    again = {
        **task,
        "base_model": "tiny-llama",
        "adapter_cell": dpo.pk,
        "judge_mode": "none",
        "max_prompts": 2,
        "max_new_tokens": 4,
        "quantization": "none",
    }
    new_cell = cell_create(project=project, kind="evaluation", config=again, created_by=owner)
    new_run = run_cell(new_cell, editor)
    wait_for(finished(new_run), timeout=150, what="the new evaluation", worker=worker)
    new_run = CellRun.objects.get(pk=new_run.pk)
    assert new_run.status == RunStatus.SUCCEEDED, (job_of(new_run).error, worker.tail())
    label = f"{dpo} v1"
    assert new_run.outputs["candidate_runs"] == {str(dpo_run.pk): [label]}
    assert list(Evaluation.objects.get(run=new_run).candidates.values_list("label", flat=True)) == [
        "tiny-llama (base)",
        label,
    ]

    steps = [(s["kind"], s["pk"]) for s in run_lineage(run=dpo_run)]
    assert steps == [
        ("evaluation", first.pk),
        ("dataset", version.pk),
        ("finetune", dpo_run.pk),
        ("checkpoint", None),
        ("evaluation", new_run.pk),
    ]
    page = client_for(viewer).get(reverse("run_detail", args=[dpo_run.pk])).content.decode()
    lineage = page[page.index('<ol class="lineage">') :]
    lineage = lineage[: lineage.index("</ol>")]
    links = [reverse("run_detail", args=[first.pk]), reverse("run_detail", args=[new_run.pk])]
    assert lineage.index(links[0]) < lineage.index(f"{new_cell} v1: tiny-llama (base) vs {label}")
    assert links[1] in lineage

    # The new evaluation's page shows the same chain, ending with itself.
    (chain,) = evaluation_lineage(run=new_run)
    assert [(s["kind"], s["pk"]) for s in chain] == steps
    page = client_for(viewer).get(reverse("run_detail", args=[new_run.pk])).content.decode()
    shown = page[page.index('<ol class="lineage">') :]
    assert shown.index(links[0]) < shown.index(reverse("dataset_version_detail", args=[version.pk]))
    assert reverse("run_detail", args=[dpo_run.pk]) in shown[: shown.index("</ol>")]
    CellRun.objects.filter(pk=dpo_run.pk).delete()  # the chain keeps the compared label
    (chain,) = evaluation_lineage(run=new_run)
    assert chain[0] == {"kind": "finetune", "label": f"{label} (deleted)", "pk": None}
    assert (chain[1]["kind"], chain[1]["pk"]) == ("evaluation", new_run.pk)
