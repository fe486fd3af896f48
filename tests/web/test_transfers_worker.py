"""Trans-LoRA end to end on a real Celery worker process and the tiny random models:
keep transferable after a fine-tune, delete the dataset, move the adapter from tiny-llama
to tiny-llama-wide, chat with it in a playground, download it; cancel mid-phase."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from django.db import OperationalError
from django.urls import reverse

from tests.web.conftest import Upload, client_for
from tests.web.test_finetune_worker import FAST, chat_jsonl, finished, job_of
from tests.web.test_finetune_worker import run_cell as post_run
from tests.web.test_finetune_worker import start_worker as start_worker  # noqa: F401 - fixture
from tests.web.worker_harness import Worker, wait_for
from webapp.core import storage
from webapp.datasets.models import Dataset, DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create
from webapp.jobs.models import Job, JobStatus
from webapp.projects.models import Cell, CellRun, RunStatus
from webapp.projects.services import cell_create as create_cell
from webapp.projects.services import project_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Small enough for a 2-core CPU: a handful of samples, short generations, 2 student steps.
TINY_TRANSFER = {
    "base_model": "tiny-llama-wide",
    "quantization": "none",
    "n_synthetic": 6,
    "max_attempts": 12,
    "sample_max_new_tokens": 8,
    "teacher_max_new_tokens": 4,
    "eval_max_new_tokens": 4,
    "eval_limit": 4,
    "max_steps": 2,
    "batch_size": 4,
}


T = TypeVar("T")


def unlocked(fn: Callable[[], T]) -> T:
    """SQLite: a write that races the worker's last write of a task can fail at once with
    "database is locked" (a deferred transaction cannot upgrade its lock); it rolled back
    whole, so it is tried again."""
    for attempt in range(10):
        try:
            return fn()
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == 9:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def cell_create(**kwargs: Any) -> Cell:
    return unlocked(lambda: create_cell(**kwargs))


def run_cell(cell: Cell, user: Any) -> CellRun:
    return unlocked(lambda: post_run(cell, user))


def notebook(team: Any, owner: Any, worker: Worker, **hparams: Any) -> dict[str, Any]:
    """test_finetune_worker's notebook, each write retried as above."""
    version = unlocked(
        lambda: dataset_version_create(
            team=team, name="plus-one", upload=Upload.make("plus.jsonl", chat_jsonl()),
            created_by=owner,
        )
    )  # fmt: skip
    wait_for(
        lambda: DatasetVersion.objects.get(pk=version.pk).status == VersionStatus.VALID,
        timeout=60,
        what="dataset validation",
        worker=worker,
    )
    project = unlocked(lambda: project_create(team=team, name="E2E", created_by=owner))
    ds = cell_create(
        project=project, kind="dataset", config={"dataset": version.dataset_id}, created_by=owner
    )
    ft = cell_create(
        project=project,
        kind="finetune",
        config={"dataset_cell": ds.pk, **FAST, **hparams},
        created_by=owner,
    )
    return {"project": project, "dataset": ds, "finetune": ft}


def transferable_status(run: CellRun) -> str | None:
    return (CellRun.objects.get(pk=run.pk).outputs.get("transferable") or {}).get("status")


def eval_cell(team: Any, owner: Any, project: Any, worker: Worker) -> Cell:
    version = unlocked(
        lambda: dataset_version_create(
            team=team, name="held-out", upload=Upload.make("held.jsonl", chat_jsonl()),
            created_by=owner,
        )
    )  # fmt: skip
    wait_for(
        lambda: DatasetVersion.objects.get(pk=version.pk).status == VersionStatus.VALID,
        timeout=60,
        what="eval dataset validation",
        worker=worker,
    )
    return cell_create(
        project=project, kind="dataset", config={"dataset": version.dataset_id}, created_by=owner
    )


def test_keep_transferable_then_move_chat_and_download(
    start_worker, team, owner, editor, viewer, outsider
) -> None:
    worker = start_worker()
    cells = notebook(
        team, owner, worker, max_steps=4, eval_every=2, save_every=2, keep_transferable=True
    )
    # Asked for: with this one worker the default is off (test_keep_transferable_default).
    assert cells["finetune"].config["keep_transferable"] is True
    source = run_cell(cells["finetune"], editor)
    wait_for(finished(source), timeout=120, what="training", worker=worker)
    wait_for(
        lambda: transferable_status(source) in ("succeeded", "failed", "cancelled"),
        timeout=420,
        what="the discriminator",
        worker=worker,
    )
    source = CellRun.objects.get(pk=source.pk)
    state = source.outputs["transferable"]
    assert state["status"] == "succeeded", (state, worker.tail())
    assert state["seeds"] == 5 and state["real"] >= 5 and state["steps"] >= 1
    assert state["task"] == "plus-one"  # the discriminator asks about the dataset by name
    out = storage.local_path(source.outputs["output_dir"])
    assert (out / "transfer" / "seeds.jsonl").is_file()
    assert (out / "discriminator" / "adapter" / "adapter_config.json").is_file()
    assert Job.objects.get(pk=state["job"]).status == JobStatus.SUCCEEDED
    page = client_for(viewer).get(reverse("run_detail", args=[source.pk])).content.decode()
    assert "Ready" in page and "the dataset may be deleted" in page

    # The customer deletes the training data; the adapter still moves, scored on a held-out set.
    held_out = eval_cell(team, owner, cells["project"], worker)
    version = DatasetVersion.objects.get(dataset__name="plus-one")
    version.file.delete(save=False)
    unlocked(lambda: Dataset.objects.filter(pk=version.dataset_id).delete())
    transfer = cell_create(
        project=cells["project"],
        kind="transfer",
        config={
            "source_cell": cells["finetune"].pk,
            "eval_cell": held_out.pk,
            "unfiltered": True,  # a tiny random target writes gibberish the filter would reject
            "ablation_seeds_only": True,
            **TINY_TRANSFER,
        },
        created_by=owner,
    )
    moved = run_cell(transfer, editor)
    wait_for(finished(moved), timeout=180, what="the transfer", worker=worker)
    moved, job = CellRun.objects.get(pk=moved.pk), job_of(moved)
    assert moved.status == RunStatus.SUCCEEDED, (moved.outputs.get("error"), worker.tail())
    report = moved.outputs["report"]
    assert report["target_model"] == "tiny-llama-wide" and report["source_model"] == "tiny-llama"
    assert set(report["accuracy"]) == {
        "source_adapter",
        "target_base",
        "transferred",
        "ablation_seeds_only",
    }
    assert all(a["n"] == 4 for a in report["accuracy"].values())
    assert report["synthesis"]["accepted"] >= 1 and not report["synthesis"]["filtered"]
    phases = moved.outputs["phases"]
    assert phases["filter"]["status"] == "skipped"
    assert all(phases[k]["status"] == "done" for k in ("generate", "teacher", "train", "evaluate"))
    assert phases["teacher"]["current"] == phases["teacher"]["total"] >= 1
    assert job.status == JobStatus.SUCCEEDED and job.result["adapter_dir"] == report["adapter"]

    page = client_for(viewer).get(reverse("run_detail", args=[moved.pk])).content.decode()
    assert 'class="accuracy-chart"' in page and "Acceptance rate" in page
    assert "plus-one v1 (deleted)" in page and "to tiny-llama-wide" in page  # lineage
    download = client_for(viewer).get(reverse("transfer_download", args=[moved.pk]))
    archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    config = json.loads(archive.read("adapter/adapter_config.json"))
    # Rank and targets left blank in the cell: the student has the source adapter's shape.
    source_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(source_config["target_modules"])
    assert config["r"] == source_config["r"] == 8
    assert json.loads(archive.read("report.json"))["target_model"] == "tiny-llama-wide"
    assert (
        client_for(outsider).get(reverse("transfer_download", args=[moved.pk])).status_code == 404
    )

    playground = cell_create(
        project=cells["project"],
        kind="playground",
        config={"model_cell": transfer.pk, "prompt": "What is 3 plus one?", "max_new_tokens": 4},
        created_by=owner,
    )
    chat = run_cell(playground, editor)
    wait_for(finished(chat), timeout=60, what="playground", worker=worker)
    chat = CellRun.objects.get(pk=chat.pk)
    assert chat.status == RunStatus.SUCCEEDED, chat.outputs
    assert chat.outputs["model"] == "tiny-llama-wide"
    assert chat.outputs["answers"][1]["adapter"] == report["adapter"]


def test_filtered_transfer_stops_at_the_budget_or_cancel_keeps_what_was_done(
    start_worker, team, owner, editor
) -> None:
    worker = start_worker()
    cells = notebook(
        team, owner, worker, max_steps=2, eval_every=2, save_every=2, keep_transferable=True
    )
    source = run_cell(cells["finetune"], editor)
    wait_for(
        lambda: transferable_status(source) in ("succeeded", "failed"),
        timeout=480,
        what="fine-tune and discriminator",
        worker=worker,
    )
    assert transferable_status(source) == "succeeded", worker.tail()

    # The trained discriminator calls the wide model's gibberish synthetic: a small budget
    # ends with the acceptance-rate message, not an endless loop.
    strict = cell_create(
        project=cells["project"],
        kind="transfer",
        config={"source_cell": cells["finetune"].pk, **TINY_TRANSFER, "max_attempts": 8},
        created_by=owner,
    )
    run = run_cell(strict, editor)
    wait_for(finished(run), timeout=120, what="the filtered transfer", worker=worker)
    run = CellRun.objects.get(pk=run.pk)
    if run.status == RunStatus.FAILED:
        assert "acceptance rate stayed at 0" in run.outputs["error"], run.outputs["error"]
        assert "8 attempts" in run.outputs["error"]
    else:  # the filter let something through: then the report says how much
        assert run.status == RunStatus.SUCCEEDED, (run.outputs, worker.tail())
        assert run.outputs["report"]["synthesis"]["attempts"] <= 8

    # A long unfiltered run is cancelled while it samples: the samples so far stay.
    long = cell_create(
        project=cells["project"],
        kind="transfer",
        config={
            "source_cell": cells["finetune"].pk,
            **TINY_TRANSFER,
            "unfiltered": True,
            "n_synthetic": 3000,
            "max_attempts": 3000,
            "sample_max_new_tokens": 32,
        },
        created_by=owner,
    )
    run = run_cell(long, editor)
    wait_for(
        lambda: (
            (CellRun.objects.get(pk=run.pk).outputs.get("phases") or {})
            .get("generate", {})
            .get("current", 0)
            >= 8
        ),
        timeout=120,
        what="sampling progress",
        worker=worker,
    )
    response = unlocked(
        lambda: client_for(editor).post(reverse("run_cancel", args=[run.pk]), follow=True)
    )
    assert response.status_code == 200
    wait_for(
        lambda: "partial" in CellRun.objects.get(pk=run.pk).outputs,
        timeout=60,
        what="the worker to stop",
        worker=worker,
    )
    run = CellRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.CANCELLED and job_of(run).status == JobStatus.CANCELLED
    kept = run.outputs["partial"]["synthesis"]
    assert 8 <= kept["attempts"] < 3000 and kept["stopped"]
    assert run.outputs["phases"]["generate"]["status"] == "cancelled"
    assert run.outputs["phases"]["teacher"]["status"] == "pending"
    assert (storage.local_path(run.outputs["output_dir"]) / "synthesis.json").is_file()
    page = client_for(editor).get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "Synthetic inputs so far" in page and "before the run stopped" in page
    assert "Resume (keeps finished phases)" in page

    # Resume goes on sampling from the kept inputs (same job, same folder); cancel again.
    first = json.loads(
        (storage.local_path(run.outputs["output_dir"]) / "synthesis.json").read_text()
    )
    unlocked(lambda: client_for(editor).post(reverse("run_resume", args=[run.pk])))
    wait_for(
        lambda: (
            CellRun.objects.get(pk=run.pk).status == RunStatus.RUNNING
            and (CellRun.objects.get(pk=run.pk).outputs.get("phases") or {})
            .get("generate", {})
            .get("current", 0)
            >= first["attempts"] + 8
        ),
        timeout=120,
        what="sampling to go on after resume",
        worker=worker,
    )
    unlocked(lambda: client_for(editor).post(reverse("run_cancel", args=[run.pk])))
    wait_for(
        lambda: "partial" in CellRun.objects.get(pk=run.pk).outputs,
        timeout=60,
        what="the worker to stop again",
        worker=worker,
    )
    second = json.loads(
        (storage.local_path(run.outputs["output_dir"]) / "synthesis.json").read_text()
    )
    assert second["attempts"] >= first["attempts"] + 8
    assert second["inputs"][: len(first["inputs"])] == first["inputs"]
    assert CellRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED


@pytest.mark.timeout(600)  # training, the answer, then 420 s at most for the discriminator
def test_keeping_transferable_makes_way_for_a_playground_answer(
    start_worker, team, owner, monkeypatch
) -> None:
    from webapp.transfers.services import transferable_job_create

    monkeypatch.setenv("INTERACTIVE_WAIT_S", "0")  # read by the worker processes
    worker = start_worker()
    cells = notebook(team, owner, worker, max_steps=2, keep_transferable=False)
    source = run_cell(cells["finetune"], owner)
    wait_for(finished(source), timeout=120, what="training", worker=worker)
    source = CellRun.objects.get(pk=source.pk)
    assert source.status == RunStatus.SUCCEEDED, source.outputs
    # The discriminator holds the one worker when a person asks the playground something.
    keep = unlocked(lambda: transferable_job_create(run=source, created_by=owner))
    wait_for(
        lambda: Job.objects.get(pk=keep.pk).status == JobStatus.RUNNING,
        timeout=60,
        what="the discriminator to start",
        worker=worker,
    )
    playground = cell_create(
        project=cells["project"],
        kind="playground",
        config={"base_model": "tiny-llama", "prompt": "What is 3 plus one?", "max_new_tokens": 4},
        created_by=owner,
    )
    chat = run_cell(playground, owner)
    wait_for(finished(chat), timeout=120, what="the playground answer", worker=worker)
    wait_for(
        lambda: transferable_status(source) == "succeeded",
        timeout=420,  # 6 epochs and the calibration pass; 165 s seen on a loaded machine
        what="the discriminator, after the answer",
        worker=worker,
    )
    keep.refresh_from_db()
    chat = CellRun.objects.get(pk=chat.pk)
    assert chat.status == RunStatus.SUCCEEDED and chat.finished_at < keep.finished_at
    messages = list(keep.events.values_list("message", flat=True))
    assert any(m.startswith("Paused for 'Playground · cell") for m in messages), messages
    assert keep.status == JobStatus.SUCCEEDED
