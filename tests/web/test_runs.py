"""Run pages and controls, stale-job recovery, estimates and charts — no worker process."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from tests.web.conftest import client_for
from webapp.core import storage
from webapp.core.catalog import model_info
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.recovery import jobs_recover
from webapp.jobs.services import job_create, job_start, job_succeed
from webapp.projects.artifacts import run_key
from webapp.projects.charts import loss_chart
from webapp.projects.estimate import CATALOG_STARTUP_S, estimate
from webapp.projects.finetune_config import PRESETS, effective_hparams, train_config_dict
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.services import (
    cell_create,
    cell_run_cancel,
    cell_run_create,
    cell_run_resume,
    cell_run_select_final,
)
from workers import tasks

PERSONAS = ("owner", "editor", "viewer", "outsider")
READ = {"owner": 200, "editor": 200, "viewer": 200, "outsider": 404}
WRITE = {"owner": 302, "editor": 302, "viewer": 403, "outsider": 404}


@pytest.fixture
def finished_run(cell_run: CellRun) -> CellRun:
    """A succeeded fine-tune run with an adapter folder and checkpoints, as a worker leaves it."""
    job_start(job_id=cell_run.job_id)
    key = run_key(cell_run.job_id)
    out = storage.local_path(key)
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 200_000)
    (out / "manifest.json").write_text(json.dumps({"base_model": "tiny-llama", "final": "last"}))
    outputs = {
        "output_dir": key,
        "adapter_dir": f"{key}/adapter",
        "checkpoints": [
            {"step": 2, "train_loss": 2.0, "val_loss": 2.1},
            {"step": 4, "train_loss": 1.5, "val_loss": 1.9},
        ],
        "history": [
            {"step": 1, "train_loss": 2.5},
            {"step": 2, "train_loss": 2.0, "val_loss": 2.1},
        ],
    }
    CellRun.objects.filter(pk=cell_run.pk).update(status=RunStatus.SUCCEEDED, outputs=outputs)
    job_succeed(job_id=cell_run.job_id)
    return CellRun.objects.get(pk=cell_run.pk)


CASES = [
    ("run_detail", "get", READ, {}),
    ("run_artifacts", "get", READ, {}),
    ("run_cancel", "post", WRITE, {}),
    ("run_resume", "post", WRITE, {}),
    ("run_select_final", "post", WRITE, {"which": "2"}),
]


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_run_views_access(case: tuple, persona: str, personas, finished_run) -> None:
    name, method, expected, data = case
    client = client_for(personas[persona])
    response = getattr(client, method)(reverse(name, args=[finished_run.pk]), data)
    assert response.status_code == expected[persona]
    anonymous = getattr(client_for(None), method)(reverse(name, args=[finished_run.pk]), data)
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]


def test_viewer_sees_no_controls_editor_does(personas, finished_run) -> None:
    url = reverse("run_detail", args=[finished_run.pk])
    viewer = client_for(personas["viewer"]).get(url).content.decode()
    assert "<svg" in viewer and "Download adapter" in viewer
    assert "Make this checkpoint final" not in viewer and "Resume" not in viewer
    editor = client_for(personas["editor"]).get(url).content.decode()
    assert "Make this checkpoint final" in editor and "Resume" not in editor  # nothing to resume
    CellRun.objects.filter(pk=finished_run.pk).update(status=RunStatus.CANCELLED)
    editor = client_for(personas["editor"]).get(url).content.decode()
    assert "Resume from last checkpoint" in editor


def test_artifacts_zip_is_streamed_with_adapter_and_manifest(personas, finished_run) -> None:
    response = client_for(personas["viewer"]).get(reverse("run_artifacts", args=[finished_run.pk]))
    assert response.streaming and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert sorted(archive.namelist()) == [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "manifest.json",
    ]
    assert archive.read("adapter/adapter_model.safetensors") == b"\0" * 200_000


def test_no_artifacts_is_404(personas, cell_run) -> None:
    assert (
        client_for(personas["owner"]).get(reverse("run_artifacts", args=[cell_run.pk])).status_code
        == 404
    )


def test_cancel_twice_is_a_clear_message(cell_run, owner) -> None:
    run = cell_run_cancel(run=cell_run, by=owner)
    assert run.status == RunStatus.CANCELLED and run.job.status == JobStatus.CANCELLED
    with pytest.raises(ValidationError, match="already finished"):
        cell_run_cancel(run=run, by=owner)
    page = client_for(owner).post(reverse("run_cancel", args=[run.pk]), follow=True)
    assert page.status_code == 200 and "This job has already finished." in page.content.decode()


def test_resume_of_finished_job_is_refused(finished_run, owner) -> None:
    with pytest.raises(ValidationError, match="This job has already finished."):
        cell_run_resume(run=finished_run, by=owner)
    page = client_for(owner).post(reverse("run_resume", args=[finished_run.pk]), follow=True)
    assert "This job has already finished." in page.content.decode()


def test_resume_of_running_job_is_refused(cell_run, owner) -> None:
    with pytest.raises(ValidationError, match="still queued or running"):
        cell_run_resume(run=cell_run, by=owner)


def test_resume_of_cancelled_run_requeues_the_same_job(
    cell_run, owner, django_capture_on_commit_callbacks
) -> None:
    cell_run_cancel(run=cell_run, by=owner)
    with django_capture_on_commit_callbacks() as callbacks:
        run = cell_run_resume(run=CellRun.objects.get(pk=cell_run.pk), by=owner)
    job = Job.objects.get(pk=run.job_id)
    assert run.status == RunStatus.QUEUED and job.status == JobStatus.QUEUED
    assert job.params["_task"] == {
        "path": "workers.tasks.run_cell",
        "args": [run.pk],
        "queue": "gpu",
        "request_id": "",  # made outside any web request
    }
    assert len(callbacks) == 1 and not job.error and job.finished_at is None


def test_select_final_needs_a_known_checkpoint(finished_run, owner) -> None:
    with pytest.raises(ValidationError, match="no checkpoint"):
        cell_run_select_final(run=finished_run, which="99", by=owner)
    job = cell_run_select_final(run=finished_run, which="4", by=owner)
    assert job.kind == "select_final" and job.params["_task"]["args"] == [
        finished_run.pk,
        "4",
        job.pk,
    ]


def _age(job: Job, seconds: int) -> None:
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, heartbeat_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_stale_job_is_requeued_then_failed_never_stuck(cell_run, settings) -> None:
    settings.JOB_MAX_DELIVERIES = 2
    job = job_start(job_id=cell_run.job_id)  # the first worker to take it
    _age(job, 30)
    assert jobs_recover(stale_after_s=60) == []  # fresh enough: left alone
    outcome = jobs_recover(stale_after_s=10)
    assert [(o.job_id, o.action) for o in outcome] == [(job.pk, "requeued")]
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.deliveries == 1
    assert job_start(job_id=job.pk).deliveries == 2  # the second worker
    _age(job, 30)
    assert [o.action for o in jobs_recover(stale_after_s=10)] == ["failed"]
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "died 2 times" in job.error
    cell_run.refresh_from_db()  # the notebook shows the run failed, not running forever
    assert cell_run.status == RunStatus.FAILED and cell_run.finished_at is not None


def test_dead_validation_worker_marks_the_version_invalid(dataset_version) -> None:
    job = Job.objects.get(pk=dataset_version.validation_job_id)
    _age(job, 3600)
    DatasetVersion.objects.filter(pk=dataset_version.pk).update(status=VersionStatus.VALIDATING)
    Job.objects.filter(pk=job.pk).update(params={})  # no task to re-send: fails at once
    assert [o.action for o in jobs_recover(stale_after_s=10)] == ["failed"]
    dataset_version.refresh_from_db()
    assert dataset_version.status == VersionStatus.INVALID
    assert "stopped responding" in dataset_version.report["error"]


def test_stale_job_without_task_fails_with_message(team, owner) -> None:
    job = job_create(team=team, kind="legacy", created_by=owner)
    _age(job, 3600)
    out = io.StringIO()
    call_command("jobs_recover", "--stale-after", "60", stdout=out)
    assert f"job {job.pk}: failed" in out.getvalue()
    assert "stopped responding" in Job.objects.get(pk=job.pk).error


def test_run_task_does_nothing_for_finished_job(finished_run) -> None:
    before = CellRun.objects.get(pk=finished_run.pk).outputs
    tasks.run_cell.apply(args=[finished_run.pk])
    run = CellRun.objects.get(pk=finished_run.pk)
    assert run.status == RunStatus.SUCCEEDED and run.outputs == before


def test_duplicate_delivery_while_another_worker_is_alive_is_dropped(cell_run) -> None:
    Job.objects.filter(pk=cell_run.job_id).update(
        status=JobStatus.RUNNING, heartbeat_at=timezone.now(), celery_task_id="other-task"
    )
    tasks.run_cell.apply(args=[cell_run.pk], task_id="duplicate")
    job = Job.objects.get(pk=cell_run.job_id)
    assert job.celery_task_id == "other-task" and job.status == JobStatus.RUNNING
    assert CellRun.objects.get(pk=cell_run.pk).status == RunStatus.QUEUED


def test_finetune_on_unvalidated_dataset_fails_with_clear_message(cell_run) -> None:
    tasks.run_cell.apply(args=[cell_run.pk])
    job = Job.objects.get(pk=cell_run.job_id)
    assert job.status == JobStatus.FAILED and "no valid version" in job.error


def test_playground_needs_a_finished_finetune(cells, owner) -> None:
    cell = cell_create(
        project=cells["finetune"].project,
        kind="playground",
        config={"model_cell": cells["finetune"].pk, "prompt": "hi"},
        created_by=owner,
    )
    run = cell_run_create(cell=cell, created_by=owner)
    tasks.run_cell.apply(args=[run.pk])
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "run it first" in run.outputs["error"]


def test_presets_and_overrides_build_the_train_config() -> None:
    assert effective_hparams({"preset": "quick"})["epochs"] == PRESETS["quick"]["epochs"]
    values = effective_hparams(
        {"preset": "thorough", "epochs": 7, "learning_rate": None, "method": ""}
    )
    assert values["epochs"] == 7 and values["learning_rate"] == PRESETS["thorough"]["learning_rate"]
    assert values["method"] == "lora"
    cfg = train_config_dict(
        {"base_model": "tiny-llama", "preset": "quick"}, data_path="/d.jsonl", output_dir="/o"
    )
    assert cfg["model"] == "tiny-llama" and cfg["data"] == "/d.jsonl" and cfg["lora_r"] == 8


def test_estimate_from_report_stats(dataset_version: DatasetVersion) -> None:
    DatasetVersion.objects.filter(pk=dataset_version.pk).update(
        status=VersionStatus.VALID,
        n_examples=100,
        report={
            "ok": True,
            "stats": {"rows": 100, "approx_tokens": {"total": 10_000, "max": 4000}},
        },
    )
    version = DatasetVersion.objects.get(pk=dataset_version.pk)
    config = {"base_model": "smollm2-135m-instruct", "preset": "quick", "batch_size": 10}
    e = estimate(config, version)
    assert e.train_examples == 90 and e.steps == 2 and e.tokens == 9000  # packed: 18 rows
    rate = model_info("smollm2-135m-instruct")["tokens_per_s_cpu"]
    assert e.seconds == pytest.approx(CATALOG_STARTUP_S + 9000 / rate)
    assert e.memory_bytes > 600 * 2**20
    assert any("cuts it" in n for n in e.notes)
    assert estimate(config, None) is None


def test_estimate_prefers_exact_counts_and_flags_another_models(dataset_version) -> None:
    stats = {
        "rows": 100,
        "approx_tokens": {"total": 10_000, "max": 400},
        "tokens": {"total": 20_000, "max": 400},
        "model": "tiny-llama",
    }
    DatasetVersion.objects.filter(pk=dataset_version.pk).update(
        status=VersionStatus.VALID, n_examples=100, report={"ok": True, "stats": stats}
    )
    version = DatasetVersion.objects.get(pk=dataset_version.pk)
    config = {"base_model": "smollm2-135m-instruct", "preset": "quick", "batch_size": 10}
    e = estimate(config, version)
    assert e.tokens == 18_000  # 90 training examples x 200 exact tokens, not the estimate
    assert any("tiny-llama's" in n for n in e.notes)
    same = estimate({**config, "base_model": "tiny-llama"}, version)
    assert not any("tokenizer may differ" in n for n in same.notes)


def test_loss_chart_is_inline_svg() -> None:
    assert "<svg" not in loss_chart([], [], None)
    svg = loss_chart([(1, 2.0), (2, 1.0)], [(2, 1.5)], 10)
    assert svg.startswith("<svg") and 'class="train"' in svg and "<circle" in svg


def test_loss_chart_shows_the_first_step_as_a_dot() -> None:
    svg = loss_chart([(1, 2.0)], [], 10)
    assert "<circle" in svg and 'class="train"/>' in svg


def test_model_choices_come_from_the_static_catalog(team, owner, editor) -> None:
    page = client_for(editor).get(
        reverse("project_detail", args=[team.projects.create(name="p", created_by=owner).pk])
        + "?add=finetune"
    )
    body = page.content.decode()
    for name in ("smollm2-135m-instruct", "tiny-llama", "quick", "learning_rate", "Default:"):
        assert name in body


def test_model_cache_keeps_the_base_model_loaded() -> None:
    from workers import services_bridge
    from workers.model_cache import CACHE

    before = CACHE.loads
    texts = []
    for _ in range(2):
        out = services_bridge.generate_one(
            model="tiny-llama",
            adapter=None,
            quantization="none",
            messages=[{"role": "user", "content": "hi"}],
            max_new_tokens=4,
            temperature=0.0,
            on_text=texts.append,
        )
        assert out["completion_tokens"] <= 4
    assert CACHE.loads - before <= 1  # loaded at most once, then reused
    assert ("tiny-llama", "none") in CACHE.bases


def test_model_cache_swaps_adapters_on_one_base(tmp_path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune_core.models import prepare
    from workers.model_cache import ModelCache

    folders = []
    for seed in (1, 2):
        base = AutoModelForCausalLM.from_pretrained(prepare("tiny-llama"))
        peft = get_peft_model(
            base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
        )
        folder = tmp_path / f"adapter-{seed}"
        peft.save_pretrained(folder)
        folders.append(str(folder))
    cache = ModelCache(max_adapters=1)
    for adapter in [folders[0], folders[1], None, folders[0]]:
        with cache.use("tiny-llama", quantization="none", adapter=adapter) as chat:
            assert chat.model is not None
    entry = cache.bases[("tiny-llama", "none")]
    assert cache.loads == 1 and len(entry.adapters) == 1  # one base; the LRU adapter kept


def test_estimate_updates_live_from_the_unsaved_form(cells, dataset_version, personas) -> None:
    DatasetVersion.objects.filter(pk=dataset_version.pk).update(
        status=VersionStatus.VALID, n_examples=50
    )
    project = cells["finetune"].project
    url = reverse("cell_estimate", args=[project.pk])
    data = {
        "dataset_cell": cells["dataset"].pk,
        "base_model": "tiny-llama",
        "batch_size": "5",
        "max_steps": "7",
    }
    body = client_for(personas["viewer"]).post(url, data).content.decode()
    assert "Pre-flight estimate" in body and "7 steps" in body and 'id="add-estimate"' in body
    data.pop("max_steps")
    body = client_for(personas["editor"]).post(url, data).content.decode()
    assert "6 steps" in body  # 45 examples x 256 tokens packed in 12 rows, 5 a batch, 2 epochs
    none = client_for(personas["editor"]).post(url, {"base_model": "tiny-llama"}).content.decode()
    assert "No estimate yet" in none
    assert client_for(personas["outsider"]).post(url, data).status_code == 404
