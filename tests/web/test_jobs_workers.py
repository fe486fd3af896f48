"""Job state machine, the Celery app's configuration, and the worker tasks on a real DB."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse
from kombu import Connection

from tests.web.conftest import CHAT_JSONL, Upload, client_for
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.services import (
    job_cancel,
    job_create,
    job_fail,
    job_progress,
    job_start,
    job_succeed,
)
from webapp.projects.models import RunStatus
from workers import tasks
from workers.celery import app


def test_job_lifecycle_and_event_log(team, owner) -> None:
    job = job_create(team=team, kind="demo", params={"x": 1}, created_by=owner)
    assert job_start(job_id=job.pk, celery_task_id="abc").status == JobStatus.RUNNING
    job = job_progress(job_id=job.pk, current=5, total=10, message="half")
    assert job.progress_percent == 50 and job.heartbeat_at is not None
    job = job_succeed(job_id=job.pk, result={"ok": True})
    assert job.is_finished and job.finished_at and job.celery_task_id == "abc"
    assert [e.message for e in job.events.all()] == ["Job queued", "Job running", "Job succeeded"]
    assert job_fail(job_id=job.pk, error="late") is None  # finished jobs stay finished


def test_cancelled_job_is_not_resurrected_by_a_late_worker(team, owner) -> None:
    job = job_create(team=team, kind="demo", created_by=owner)
    job_cancel(job=job, by=owner)
    assert job_start(job_id=job.pk) is None
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    with pytest.raises(ValidationError):
        job_cancel(job=Job.objects.get(pk=job.pk))


def test_celery_app_configuration() -> None:
    conf = app.conf
    assert conf.broker_url == settings.CELERY_BROKER_URL
    assert conf.task_acks_late and conf.worker_prefetch_multiplier == 1
    assert {q.name for q in conf.task_queues} == {"default", "gpu", "background"}
    assert conf.task_routes["workers.tasks.run_cell"] == {"queue": "gpu"}
    for task in (tasks.validate_dataset_version, tasks.run_cell):
        assert task.acks_late and task.soft_time_limit < task.time_limit


def test_default_broker_needs_no_server(tmp_path: Path) -> None:
    with Connection(f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}") as conn:
        tasks.validate_dataset_version.apply_async(args=[42], connection=conn, task_id="t-1")
        message = conn.SimpleQueue("default").get(timeout=5)
        assert message.headers["task"] == "workers.tasks.validate_dataset_version"
        assert message.headers["id"] == "t-1"
        message.ack()


def test_validate_dataset_version_task(dataset_version: DatasetVersion) -> None:
    tasks.validate_dataset_version.apply(args=[dataset_version.pk])
    version = DatasetVersion.objects.get(pk=dataset_version.pk)
    assert version.status == VersionStatus.VALID, version.report
    assert version.n_examples == 2 and version.report["ok"] is True
    job = version.validation_job
    assert job.status == JobStatus.SUCCEEDED and job.started_at is not None
    # No preview model chosen: the counts are an estimate, and say so.
    assert version.report["stats"]["approx_tokens"]["total"] > 0
    assert "model" not in version.report["stats"]


def _validated(team, owner, *, preview_model: str) -> DatasetVersion:
    version = dataset_version_create(
        team=team,
        name="greetings",
        upload=Upload.make("chat.jsonl", CHAT_JSONL),
        created_by=owner,
        preview_model=preview_model,
    )
    tasks.validate_dataset_version.apply(args=[version.pk])
    version.refresh_from_db()
    return version


def test_validation_counts_tokens_with_the_chosen_models_template(team, owner) -> None:
    from finetune_core.data import read_examples
    from finetune_core.data.stats import count_tokens
    from finetune_core.models.loading import load_tokenizer

    version = _validated(team, owner, preview_model="tiny-llama")
    stats = version.report["stats"]
    tokenizer = load_tokenizer("tiny-llama")
    exact = [count_tokens(e, tokenizer) for e in read_examples(version.file.path)]
    assert stats["model"] == "tiny-llama" and stats["tokens"]["total"] == sum(exact)
    assert stats["tokens"]["max"] == max(exact) and stats["n_truncated"] == 0
    segments = version.report["preview"][0]["segments"]
    roles = [s["role"] for s in segments]
    assert {"template", "user", "assistant"} <= set(roles)
    assert [s["text"] for s in segments if s["role"] != "template"] == ["Hi", "Hello!"]
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        tokenize=False,
    )
    assert "".join(s["text"] for s in segments) == rendered  # nothing dropped, nothing added

    page = client_for(owner).get(reverse("dataset_version_detail", args=[version.pk]))
    text = page.content.decode()
    assert "Exact counts with the <code>tiny-llama</code>" in text
    assert 'class="seg seg-user"' in text and 'class="seg seg-assistant"' in text


def test_validation_falls_back_to_an_estimate_when_the_model_fails(team, owner) -> None:
    version = _validated(team, owner, preview_model="no-such-model")
    assert version.status == VersionStatus.VALID
    stats = version.report["stats"]
    assert stats["approx_tokens"]["total"] > 0 and "no-such-model" in stats["note"]


def test_validate_task_records_failures_on_the_version(dataset_version: DatasetVersion) -> None:
    Path(dataset_version.file.path).unlink()  # whatever the validator, a missing file fails
    tasks.validate_dataset_version.apply(args=[dataset_version.pk])
    version = DatasetVersion.objects.get(pk=dataset_version.pk)
    assert version.status == VersionStatus.INVALID and version.report["ok"] is False
    assert version.report.get("error") or version.report.get("errors")


def test_validate_task_skips_cancelled_jobs(dataset_version: DatasetVersion) -> None:
    job_cancel(job=dataset_version.validation_job)
    tasks.validate_dataset_version.apply(args=[dataset_version.pk])
    assert DatasetVersion.objects.get(pk=dataset_version.pk).status == VersionStatus.UPLOADED


def test_run_cell_task_settles_run_and_job_together(cell_run) -> None:
    tasks.run_cell.apply(args=[cell_run.pk])
    cell_run.refresh_from_db()
    job = Job.objects.get(pk=cell_run.job_id)
    assert cell_run.status in {RunStatus.SUCCEEDED, RunStatus.FAILED}
    assert job.status == cell_run.status and job.is_finished
