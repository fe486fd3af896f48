"""Per-team limits set by the operator (TEAM_*): storage, jobs at once, steps, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from finetune_core.contracts.layout import TRAINER_STATE, checkpoint_dir
from finetune_core.train.checkpoint import list_checkpoints, prune_checkpoints
from tests.web.conftest import CHAT_JSONL, Upload, client_for
from tests.web.test_datasets import leftover_files, upload
from webapp.core.limits import LimitExceeded
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create, dataset_version_mark
from webapp.jobs.models import Job, JobStatus
from webapp.projects.artifacts import run_key
from webapp.projects.finetune_config import train_config_dict
from webapp.projects.models import CellRun
from webapp.projects.services import cell_run_cancel, cell_run_create, cell_run_resume
from workers.finetune_run import train_reporter
from workers.workspace import open_run_space


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_storage_limit_refuses_an_upload_while_it_streams(team, editor, settings) -> None:
    settings.TEAM_STORAGE_BYTES = len(CHAT_JSONL) * 2 - 1
    client = client_for(editor)
    assert upload(client, team, "greetings", CHAT_JSONL).status_code == 302
    refused = upload(client, team, "greetings", CHAT_JSONL)
    page = refused.content.decode()
    # The streaming handler stopped it (the form's own refusal would be a 400).
    assert refused.status_code == 413
    assert "left of its" in page and "dataset storage limit" in page
    assert DatasetVersion.objects.count() == 1 and leftover_files() == []
    settings.TEAM_STORAGE_BYTES = 0  # 0: no limit
    assert upload(client, team, "greetings", CHAT_JSONL).status_code == 302


def test_storage_limit_is_checked_when_the_upload_is_accepted(team, owner, settings) -> None:
    settings.TEAM_STORAGE_BYTES = len(CHAT_JSONL) + 10
    dataset_version_create(
        team=team, name="a", upload=Upload.make("a.jsonl", CHAT_JSONL), created_by=owner
    )
    with pytest.raises(LimitExceeded) as over:
        dataset_version_create(
            team=team, name="b", upload=Upload.make("b.jsonl", CHAT_JSONL), created_by=owner
        )
    assert over.value.status == 413 and over.value.api_code == "team_storage_limit"
    assert "10\xa0bytes left" in over.value.messages[0]
    assert list(DatasetVersion.objects.values_list("dataset__name", flat=True)) == ["a"]


def test_job_limit_refuses_a_run_with_a_message(team, owner, cells, settings) -> None:
    settings.TEAM_ACTIVE_JOBS = 1
    client = client_for(owner)
    url = reverse("cell_run", args=[cells["finetune"].pk])
    first = client.post(url)
    assert any("queued" in m for m in _messages(first))
    second = client.post(url)
    assert any("1 jobs queued or running, and its limit is 1" in m for m in _messages(second))
    assert CellRun.objects.count() == 1
    # A dataset upload's validation job is not refused: storage bounds uploads.
    assert upload(client, team, "more", CHAT_JSONL).status_code == 302
    # Cancelled, the first frees its place; resuming it takes that place again.
    run = CellRun.objects.get()
    cell_run_cancel(run=run, by=owner)
    again = cell_run_create(cell=cells["finetune"], created_by=owner)
    with pytest.raises(LimitExceeded, match="limit is 1"):
        cell_run_resume(run=run, by=owner)
    assert Job.objects.get(pk=again.job_id).status == JobStatus.QUEUED


def test_max_steps_cap_names_the_cap(team, owner, cells, dataset_version, settings) -> None:
    settings.TEAM_MAX_STEPS = 3
    dataset_version_mark(version_id=dataset_version.pk, status=VersionStatus.VALID, n_examples=2)
    cell = cells["finetune"]
    cell.config = {**cell.config, "epochs": 10}
    cell.save()
    refused = client_for(owner).post(reverse("cell_run", args=[cell.pk]))
    assert any("would take 10 steps, over the cap of 3 steps" in m for m in _messages(refused)), (
        _messages(refused)
    )
    assert CellRun.objects.count() == 0
    cell.config = {**cell.config, "max_steps": 3}
    cell.save()
    assert cell_run_create(cell=cell, created_by=owner).inputs["max_steps"] == 3


def test_checkpoints_kept_travels_to_the_engine_which_prunes(
    cells, owner, settings, tmp_path: Path
) -> None:
    settings.TEAM_CHECKPOINTS_KEPT = 2
    run = cell_run_create(cell=cells["finetune"], created_by=owner)
    config = train_config_dict(run.inputs, data_path="d.jsonl", output_dir=tmp_path)
    assert config["keep_checkpoints"] == 2
    for step in (10, 20, 30):
        folder = checkpoint_dir(tmp_path, step)
        folder.mkdir(parents=True)
        (folder / TRAINER_STATE).write_text("{}")
    prune_checkpoints(tmp_path, keep=config["keep_checkpoints"])
    assert list_checkpoints(tmp_path) == [checkpoint_dir(tmp_path, s) for s in (20, 30)]
    # The runner offers only the kept ones to choose the final adapter from.
    progress = train_reporter(run, run.job_id, "task-1", open_run_space(run_key(run.job_id)))
    for step in (10, 20, 30):
        progress.progress(
            "train", step, 30, {"kind": "checkpoint", "step": step, "total_steps": 30}
        )
    run.refresh_from_db()
    assert [c["step"] for c in run.outputs["checkpoints"]] == [20, 30]
    settings.TEAM_CHECKPOINTS_KEPT = 0
    unlimited = cell_run_create(cell=cells["finetune"], created_by=owner)
    assert "keep_checkpoints" not in unlimited.inputs
