"""Preference tuning in the notebook, on a real Celery worker: a fine-tune cell chooses DPO
(or SimPO) and a dataset of preference pairs, and may start from an earlier fine-tune
cell's adapter; the form refuses a dataset that does not suit the method; the worker
trains DPO from the supervised adapter and the run page shows its rewards and accuracy.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse

from tests.web.conftest import Upload, client_for
from tests.web.preference_data import CHAT, PREFERENCE
from tests.web.test_finetune_worker import FAST, finished, job_of, run_cell, start_worker
from tests.web.worker_harness import Worker, wait_for
from webapp.core import storage
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create
from webapp.jobs.models import JobStatus
from webapp.projects.models import Cell, CellRun, RunStatus
from webapp.projects.services import cell_create, project_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
__all__ = ["start_worker"]  # the worker fixture, shared with the fine-tune tests


def validated(team: Any, owner: Any, worker: Worker, name: str, data: bytes) -> DatasetVersion:
    version = dataset_version_create(
        team=team, name=name, upload=Upload.make(f"{name}.jsonl", data), created_by=owner
    )
    wait_for(
        lambda: DatasetVersion.objects.get(pk=version.pk).status == VersionStatus.VALID,
        timeout=60,
        what=f"validation of {name}",
        worker=worker,
    )
    return DatasetVersion.objects.get(pk=version.pk)


def test_a_dpo_cell_trains_on_pairs_and_its_run_shows_rewards(
    start_worker, team, owner, editor, viewer
) -> None:
    worker = start_worker()
    pairs = validated(team, owner, worker, "pairs", PREFERENCE)
    chat = validated(team, owner, worker, "answers", CHAT)
    assert (pairs.report["format"], chat.report["format"]) == ("preference", "chat")
    project = project_create(team=team, name="Prefer", created_by=owner)
    pair_cell, chat_cell = (
        cell_create(
            project=project, kind="dataset", config={"dataset": v.dataset_id}, created_by=owner
        )
        for v in (pairs, chat)
    )
    # A supervised cell first: the DPO cell continues from its adapter.
    sft = cell_create(
        project=project,
        kind="finetune",
        config={"dataset_cell": chat_cell.pk, **FAST, "max_steps": 2, "lora_r": 4},
        created_by=owner,
        title="Answers",
    )
    sft_run = run_cell(sft, editor)
    wait_for(finished(sft_run), timeout=150, what="supervised training", worker=worker)
    sft_run = CellRun.objects.get(pk=sft_run.pk)
    assert sft_run.status == RunStatus.SUCCEEDED, (job_of(sft_run).error, worker.tail())
    add = reverse("cell_add", args=[project.pk])
    client = client_for(editor)
    form = {
        "kind": "finetune",
        "title": "Prefer",
        **FAST,
        "training_method": "dpo",
        "beta": 0.2,
        "max_steps": 2,
        "eval_every": 1,
        "save_every": 2,
        "init_cell": sft.pk,
    }

    # The dataset must suit the method, both ways round; nothing is saved until it does.
    wrong = client.post(add, {**form, "dataset_cell": chat_cell.pk})
    assert wrong.status_code == 400
    assert "DPO trains on preference pairs, and dataset “answers” (v1) holds chat examples" in (
        wrong.content.decode()
    )
    wrong = client.post(
        add, {**form, "training_method": "supervised", "dataset_cell": pair_cell.pk}
    )
    assert wrong.status_code == 400
    assert (
        "Supervised training learns answers, and dataset “pairs” (v1) holds preference pairs"
        in (wrong.content.decode())
    )
    wrong = client.post(
        add, {**form, "dataset_cell": pair_cell.pk, "val_dataset_cell": chat_cell.pk}
    )
    assert wrong.status_code == 400 and "holds chat examples" in wrong.content.decode()
    other_base = {**form, "dataset_cell": pair_cell.pk, "base_model": "smollm2-135m-instruct"}
    wrong = client.post(add, other_base)
    assert wrong.status_code == 400
    assert "cell 3 · Answers trained on tiny-llama: choose it as the base model too" in (
        wrong.content.decode()
    )
    assert list(project.cells.filter(kind="finetune")) == [sft]
    simpo = client.post(add, {**form, "training_method": "simpo", "dataset_cell": pair_cell.pk})
    assert simpo.status_code == 302
    assert client.post(add, {**form, "dataset_cell": pair_cell.pk}).status_code == 302
    cell = project.cells.filter(kind="finetune").order_by("-position").first()
    assert cell.config["init_cell"] == sft.pk
    assert (cell.config["training_method"], cell.config["beta"]) == ("dpo", 0.2)
    assert Cell.objects.get(project=project, config__training_method="simpo").config["beta"] == 0.2

    run = run_cell(cell, editor)
    wait_for(finished(run), timeout=150, what="DPO training", worker=worker)
    job, run = job_of(run), CellRun.objects.get(pk=run.pk)
    assert job.status == JobStatus.SUCCEEDED, (job.error, worker.tail())
    assert run.status == RunStatus.SUCCEEDED
    # The worker built a DPO config from the cell, and the engine trained it as one.
    assert (run.outputs["config"]["training_method"], run.outputs["config"]["beta"]) == ("dpo", 0.2)
    # It started from the supervised cell's adapter (DPO's reference), keeping its rank.
    assert run.outputs["config"]["init_adapter"] == sft_run.outputs["adapter_dir"]
    adapter = storage.local_path(run.outputs["adapter_dir"])
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    manifest = json.loads((adapter.parent / "manifest.json").read_text())
    assert manifest["hyperparameters"]["training_method"] == "dpo"
    assert 0.0 <= job.metrics["rewards/accuracies"] <= 1.0
    assert job.metrics["rewards/margins"] == pytest.approx(
        job.metrics["rewards/chosen"] - job.metrics["rewards/rejected"], abs=1e-5
    )
    assert "val_rewards/accuracies" in job.metrics  # measured on the held-out pairs
    steps = [e.data for e in job.events.all() if e.data.get("kind") == "step"]
    assert steps and all("rewards/chosen" in s for s in steps), steps

    page = client_for(viewer).get(reverse("run_detail", args=[run.pk])).content.decode()
    for label in ("Reward, preferred", "Reward, not preferred", "Reward margin"):
        assert f"<dt>{label}</dt>" in page
    accuracy = f"{job.metrics['rewards/accuracies']:.3f}"
    assert f'<dt>Preference accuracy</dt><dd class="preference-metric">{accuracy}</dd>' in page
    assert "Preference accuracy (validation)" in page
