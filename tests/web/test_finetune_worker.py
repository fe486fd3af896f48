"""End to end on a real Celery worker process: train, stream, cancel, survive a SIGKILL.

Uses the tiny-llama model; each test starts `celery -A workers worker --pool=solo` on a
SQLite-file broker in a tmp folder, sharing the test database with this process.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from tests.web.conftest import Upload, client_for
from tests.web.worker_harness import Worker, broker, wait_for, worker_broker_url
from webapp.core import storage
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.recovery import jobs_recover
from webapp.projects.models import Cell, CellRun, MeasuredThroughput, RunStatus
from webapp.projects.services import cell_create, project_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROWS = [(f"What is {i} plus one?", f"{i + 1}") for i in range(40)]
FAST = {
    "base_model": "tiny-llama",
    "preset": "quick",
    "quantization": "none",
    "batch_size": 2,
    "max_length": 160,
    "learning_rate": 0.005,
    "lora_r": 8,
    "warmup_ratio": 0.0,
    "val_fraction": 0.1,
    "keep_transferable": False,  # the discriminator is tested in test_transfers_worker.py
}


def chat_jsonl() -> bytes:
    lines = []
    for q, a in ROWS:
        msgs = [
            {"role": "system", "content": "Answer with a number."},
            {"role": "user", "content": q},
            {"role": "assistant", "content": a},
        ]
        lines.append(json.dumps({"messages": msgs}))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def start_worker(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    broker_url = worker_broker_url(tmp_path)
    started: list[Worker] = []

    def start(**options: str) -> Worker:
        worker = Worker(
            broker_url=broker_url,
            data_dir=tmp_path,
            media_root=tmp_path / "media",
            # A second worker of one test logs apart, so a test can tell which ran a job.
            log=tmp_path / ("worker.log" if not started else f"worker-{len(started)}.log"),
            **options,
        )
        started.append(worker)
        return worker

    with broker(broker_url):
        try:
            yield start
        finally:
            for worker in started:
                worker.stop()


def notebook(team: Any, owner: Any, worker: Worker, **hparams: Any) -> dict[str, Cell]:
    """A validated dataset (by the worker) and dataset + fine-tune cells."""
    version = dataset_version_create(
        team=team, name="plus-one", upload=Upload.make("plus.jsonl", chat_jsonl()), created_by=owner
    )
    wait_for(
        lambda: DatasetVersion.objects.get(pk=version.pk).status == VersionStatus.VALID,
        timeout=60,
        what="dataset validation",
        worker=worker,
    )
    project = project_create(team=team, name="E2E", created_by=owner)
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


def run_cell(cell: Cell, user: Any) -> CellRun:
    response = client_for(user).post(reverse("cell_run", args=[cell.pk]))
    assert response.status_code == 302
    return CellRun.objects.filter(cell=cell).order_by("-version").first()


def job_of(run: CellRun) -> Job:
    return Job.objects.get(pk=run.job_id)


def finished(run: CellRun) -> Callable[[], bool]:
    return lambda: job_of(run).is_finished


def checkpointed(run: CellRun) -> Callable[[], Any]:
    return lambda: CellRun.objects.get(pk=run.pk).outputs.get("checkpoints")


def test_finetune_trains_streams_progress_and_serves_the_adapter(
    start_worker, team, owner, editor, viewer, outsider
) -> None:
    worker = start_worker()
    cells = notebook(team, owner, worker, max_steps=6, eval_every=2, save_every=2)
    page = client_for(viewer).get(reverse("project_detail", args=[cells["project"].pk]))
    text = page.content.decode()
    assert "Pre-flight estimate" in text and "6 steps" in text
    assert "msg-system" in text and "msg-assistant" in text and "Token statistics" in text

    run = run_cell(cells["finetune"], editor)
    wait_for(finished(run), timeout=120, what="training", worker=worker)
    job, run = job_of(run), CellRun.objects.get(pk=run.pk)
    assert job.status == JobStatus.SUCCEEDED, (job.error, worker.tail())
    assert run.status == RunStatus.SUCCEEDED
    assert job.progress_current == job.progress_total == 6
    for key in ("train_loss", "val_loss", "learning_rate", "tokens_per_s", "peak_memory_bytes"):
        assert job.metrics.get(key) is not None, key
    kinds = {e.data.get("kind") for e in job.events.all()}
    assert {"start", "step", "eval", "checkpoint", "done"} <= kinds
    assert [c["step"] for c in run.outputs["checkpoints"]] == [2, 4, 6]
    assert all(c["train_loss"] is not None for c in run.outputs["checkpoints"])
    adapter = storage.local_path(run.outputs["adapter_dir"])
    assert (adapter / "adapter_model.safetensors").exists()
    assert [h["step"] for h in run.outputs["history"]] == [1, 2, 3, 4, 5, 6]
    # What the run measured: the next estimate of tiny-llama is based on it (issue 27).
    measured = MeasuredThroughput.objects.get(base_model="tiny-llama")
    assert (measured.lane, len(measured.runs)) == ("gpu", 1) and measured.device in ("cpu", "cuda")
    sample = measured.runs[0]
    assert sample["run"] == run.pk and sample["train_s"] > 0 and sample["peak_bytes"] > 0
    # A tiny model's activations fit many times over: auto trained without checkpointing,
    # and the sample says so (its peak is more than a run needs).
    assert job.metrics["gradient_checkpointing"] == 0 and sample["checkpointed"] is False
    notebook_page = client_for(viewer).get(reverse("project_detail", args=[cells["project"].pk]))
    assert "Based on 1 earlier run of tiny-llama" in notebook_page.content.decode()

    live = client_for(viewer).get(reverse("run_detail", args=[run.pk]), HTTP_HX_REQUEST="true")
    body = live.content.decode()
    assert live.status_code == 200 and "<svg" in body and 'class="train"' in body
    assert "hx-trigger" not in body  # finished: polling stops
    assert "Make this checkpoint final" not in body and "Resume" not in body  # read-only

    download = client_for(viewer).get(reverse("run_artifacts", args=[run.pk]))
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    names = set(archive.namelist())
    assert {
        "manifest.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    } <= names
    assert json.loads(archive.read("manifest.json"))["base_model"] == "tiny-llama"
    assert client_for(outsider).get(reverse("run_artifacts", args=[run.pk])).status_code == 404

    again = client_for(editor).post(reverse("run_resume", args=[run.pk]), follow=True)
    assert "This job has already finished." in again.content.decode()

    client_for(editor).post(reverse("run_select_final", args=[run.pk]), {"which": "2"})
    wait_for(
        lambda: CellRun.objects.get(pk=run.pk).outputs.get("final") == "2",
        timeout=60,
        what="select_final",
        worker=worker,
    )
    manifest = json.loads((adapter.parent / "manifest.json").read_text())
    assert manifest["final"] == "2"

    playground = cell_create(
        project=cells["project"],
        kind="playground",
        config={
            "model_cell": cells["finetune"].pk,
            "prompt": "What is 3 plus one?",
            "max_new_tokens": 8,
        },
        created_by=owner,
    )
    chat = run_cell(playground, editor)
    wait_for(finished(chat), timeout=60, what="playground", worker=worker)
    chat = CellRun.objects.get(pk=chat.pk)
    assert chat.status == RunStatus.SUCCEEDED, chat.outputs
    answers = chat.outputs["answers"]
    assert [a["adapter"] is None for a in answers] == [True, False]
    assert all(a["done"] and isinstance(a["text"], str) for a in answers)
    page = client_for(viewer).get(reverse("run_detail", args=[chat.pk])).content.decode()
    assert "Base model (tiny-llama)" in page and "Fine-tuned" in page


def test_cancel_stops_training_and_cancel_twice_is_a_message(
    start_worker, team, owner, editor
) -> None:
    worker = start_worker()
    cells = notebook(team, owner, worker, max_steps=400, eval_every=100, save_every=100)
    run = run_cell(cells["finetune"], editor)
    wait_for(lambda: job_of(run).progress_current >= 2, timeout=90, what="steps", worker=worker)
    client = client_for(editor)
    first = client.post(reverse("run_cancel", args=[run.pk]), follow=True)
    assert "Cancelling" in first.content.decode()
    second = client.post(reverse("run_cancel", args=[run.pk]), follow=True)
    assert second.status_code == 200 and "This job has already finished." in second.content.decode()
    wait_for(
        lambda: "steps" in CellRun.objects.get(pk=run.pk).outputs,
        timeout=60,
        what="the worker to stop",
        worker=worker,
    )
    run, job = CellRun.objects.get(pk=run.pk), job_of(run)
    assert run.status == RunStatus.CANCELLED and job.status == JobStatus.CANCELLED
    stopped = run.outputs["steps"]
    assert 2 <= stopped < 400
    assert run.outputs["checkpoints"][-1]["step"] == stopped  # kept for a resume
    assert any(e.data.get("kind") == "cancelled" for e in job.events.all())


def test_worker_killed_mid_run_resumes_from_checkpoint(start_worker, team, owner, editor) -> None:
    worker = start_worker()
    cells = notebook(team, owner, worker, max_steps=24, eval_every=3, save_every=3)
    run = run_cell(cells["finetune"], editor)
    wait_for(checkpointed(run), timeout=90, what="the first checkpoint", worker=worker)
    worker.kill()
    job = job_of(run)
    assert job.status == JobStatus.RUNNING and job.progress_current < 24
    killed_at = job.progress_current

    outcomes = jobs_recover(stale_after_s=0)
    assert [(o.job_id, o.action) for o in outcomes] == [(job.pk, "requeued")]
    assert job_of(run).status == JobStatus.QUEUED

    second = start_worker()
    wait_for(finished(run), timeout=120, what="the resumed run", worker=second)
    job, run = job_of(run), CellRun.objects.get(pk=run.pk)
    assert job.status == JobStatus.SUCCEEDED, (job.error, second.tail())
    resumed = [e.data["step"] for e in job.events.all() if e.data.get("kind") == "resume"]
    starts = [e.data["step"] for e in job.events.all() if e.data.get("kind") == "start"]
    assert len(resumed) == 1 and resumed[0] >= 3 and resumed[0] % 3 == 0
    assert starts == [0, resumed[0]]  # the second attempt started at the checkpoint
    assert resumed[0] <= killed_at + 3
    assert run.outputs["steps"] == 24
    assert [h["step"] for h in run.outputs["history"]] == list(range(1, 25))
    assert "start 2 of 3" in " ".join(e.message for e in job.events.all())
    assert job.deliveries == 2  # the killed start and the one that finished


def test_separate_validation_dataset_and_target_modules_reach_training(
    start_worker, team, owner
) -> None:
    worker = start_worker()
    cells = notebook(team, owner, worker, max_steps=2, eval_every=2, save_every=2)
    held_out = b"".join(
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        ).encode()
        + b"\n"
        for q, a in [("What is 100 plus one?", "101"), ("What is 200 plus one?", "201")]
    )
    version = dataset_version_create(
        team=team, name="held-out", upload=Upload.make("val.jsonl", held_out), created_by=owner
    )
    wait_for(
        lambda: DatasetVersion.objects.get(pk=version.pk).status == VersionStatus.VALID,
        timeout=60,
        what="validation of the held-out set",
        worker=worker,
    )
    val_cell = cell_create(
        project=cells["project"],
        kind="dataset",
        config={"dataset": version.dataset_id},
        created_by=owner,
    )
    tune = cell_create(
        project=cells["project"],
        kind="finetune",
        config={
            "dataset_cell": cells["dataset"].pk,
            "val_dataset_cell": val_cell.pk,
            **FAST,
            "max_steps": 2,
            "eval_every": 2,
            "target_modules": "q_proj,v_proj",
        },
        created_by=owner,
    )
    run = run_cell(tune, owner)
    wait_for(finished(run), timeout=120, what="training", worker=worker)
    assert job_of(run).status == JobStatus.SUCCEEDED, (job_of(run).error, worker.tail())
    run.refresh_from_db()
    folder = storage.local_path(run.outputs["adapter_dir"])
    manifest = json.loads((folder.parent / "manifest.json").read_text())
    # Every training row trains; validation is exactly the other dataset's two rows.
    assert manifest["data"]["n_val_examples"] == 2
    assert manifest["data"]["n_train_examples"] == len(ROWS)
    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == ["q_proj", "v_proj"]
    assert any("val_loss" in h for h in run.outputs["history"])
