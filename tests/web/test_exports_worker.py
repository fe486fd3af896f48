"""Exports as jobs on a real Celery worker process: tiny-llama is fine-tuned there, then
exported (adapter, merged, GGUF) from the run page, and a transfer run's adapter too; the files land in storage with the
sizes and hashes recorded and download intact, on a local folder and on S3 (moto's
server over HTTP). Cancel and failure run the worker's export runner in this process
against the real engine, so the moment they land is certain; both leave no files."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from benchmarks.bench_export_speed import seeded_run
from finetune_core.contracts.layout import TRANSFERRED
from tests.s3server import S3Server, credentials_env, s3, use_s3
from tests.web.conftest import client_for
from tests.web.export_fixtures import finish_finetune
from tests.web.test_finetune_worker import finished, job_of, notebook, run_cell
from tests.web.worker_harness import Worker, broker, wait_for, worker_broker_url
from webapp.core import storage
from webapp.exports.models import Export
from webapp.exports.services import export_create
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.services import job_cancel, job_start
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.services import cell_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
__all__ = ["s3"]  # the fixture


@pytest.fixture
def start_worker(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    broker_url = worker_broker_url(tmp_path)
    started: list[Worker] = []

    def start(**environ: str) -> Worker:
        worker = Worker(
            broker_url=broker_url,
            data_dir=tmp_path,
            media_root=tmp_path / "media",
            log=tmp_path / "worker.log",
            EXPORT_MEASURE_PROMPTS="4",  # the merged export's comparison, kept short
            **environ,
        )
        started.append(worker)
        return worker

    with broker(broker_url):
        try:
            yield start
        finally:
            for worker in started:
                worker.stop()


def trained(team: Any, owner: Any, editor: Any, worker: Worker) -> CellRun:
    cells = notebook(team, owner, worker, max_steps=2, eval_every=2, save_every=2)
    run = run_cell(cells["finetune"], editor)
    wait_for(finished(run), timeout=150, what="training", worker=worker)
    assert job_of(run).status == JobStatus.SUCCEEDED, (job_of(run).error, worker.tail())
    return CellRun.objects.select_related("cell__project__team").get(pk=run.pk)


def export_from_the_page(run: CellRun, editor: Any, choice: str, worker: Worker) -> Export:
    response = client_for(editor).post(reverse("export_start", args=[run.pk]), {"export": choice})
    assert response.status_code == 302
    export = Export.objects.filter(run=run).order_by("-pk").first()
    wait_for(
        lambda: Job.objects.get(pk=export.job_id).is_finished,
        timeout=120,
        what=f"the {choice} export",
        worker=worker,
    )
    export = Export.objects.select_related("job").get(pk=export.pk)
    assert export.job.status == JobStatus.SUCCEEDED, (export.job.error, worker.tail())
    return export


def check_stored(export: Export, viewer: Any) -> dict[str, Any]:
    """Every recorded file is in storage with its size and sha256, downloads intact, and
    export.json (stored last) agrees; returns export.json."""
    stored = storage.keys_under(export.key)
    names = {f["name"] for f in export.files}
    assert sorted(stored) == sorted(storage.join(export.key, n) for n in names | {"export.json"})
    client = client_for(viewer)
    for f in export.files:
        response = client.get(reverse("export_file", args=[export.pk, f["name"]]))
        assert response.status_code == 200 and response.streaming
        data = b"".join(response.streaming_content)
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    manifest = json.loads(storage.read_bytes(storage.join(export.key, "export.json")))
    assert manifest["files"] == export.files
    archive = zipfile.ZipFile(
        io.BytesIO(b"".join(client.get(reverse("export_zip", args=[export.pk])).streaming_content))
    )
    assert len(archive.namelist()) == len(names) + 1 and archive.testzip() is None
    return manifest


def test_exports_run_as_jobs_and_their_files_download_intact(
    start_worker, team, owner, editor, viewer
) -> None:
    worker = start_worker()
    run = trained(team, owner, editor, worker)

    adapter = export_from_the_page(run, editor, "adapter/as-trained", worker)
    assert adapter.key == f"{run.outputs['output_dir']}/exports/adapter-as-trained"
    names = {f["name"] for f in adapter.files}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= names
    manifest = check_stored(adapter, viewer)
    assert manifest["trained_against"]["model"] == "tiny-llama"
    job = adapter.job
    assert (job.progress_current, job.progress_total, job.progress_message) == (100, 100, "done")
    assert "Exporting as adapter" in [e.message for e in job.events.all()]
    assert job.result["files"] == len(adapter.files)

    merged = export_from_the_page(run, editor, "merged/f16", worker)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        f["name"] for f in merged.files
    }
    manifest = check_stored(merged, viewer)
    assert merged.manifest["fidelity"]["prompts"] == 4 and manifest["dtype"] == "f16"

    gguf = export_from_the_page(run, editor, "gguf/q8_0", worker)
    gguf_file = gguf.manifest["gguf_file"]
    assert {f["name"] for f in gguf.files} == {gguf_file, "Modelfile"}
    check_stored(gguf, viewer)
    data = storage.read_bytes(storage.join(gguf.key, gguf_file))
    assert data[:4] == b"GGUF"

    # Nothing else in the run's exports folder: no staging folder was left behind.
    exports = storage.local_path(f"{run.outputs['output_dir']}/exports")
    assert sorted(p.name for p in exports.iterdir()) == [
        "adapter-as-trained", "gguf-q8_0", "merged-f16",
    ]  # fmt: skip
    page = client_for(viewer).get(reverse("run_detail", args=[run.pk])).content.decode()
    assert all(f["sha256"] in page for e in (adapter, merged, gguf) for f in e.files)
    assert "greedy agreement" in page


def test_on_s3_the_export_is_uploaded_under_the_run_key_and_scratch_is_emptied(
    start_worker, s3: S3Server, settings, monkeypatch, tmp_path: Path, team, owner, editor, viewer
) -> None:
    bucket = f"ex-{tmp_path.name[-40:]}".lower().replace("_", "-")
    use_s3(s3, settings, monkeypatch, bucket)
    worker = start_worker(
        STORAGE_URL=s3.url(bucket, "team-data"),
        SCRATCH_DIR=str(tmp_path / "worker-scratch"),
        **credentials_env(),
    )
    run = trained(team, owner, editor, worker)
    assert storage.local_path(run.outputs["output_dir"]) is None  # really in the bucket
    export = export_from_the_page(run, editor, "adapter/as-trained", worker)
    check_stored(export, viewer)
    objects = s3.client().list_objects_v2(
        Bucket=bucket, Prefix=f"team-data/artifacts/{export.key}/"
    )
    assert sorted(o["Key"].rsplit("/", 1)[-1] for o in objects["Contents"]) == sorted(
        [f["name"] for f in export.files] + ["export.json"]
    )
    leftovers = tmp_path / "worker-scratch" / "runs" / f"export-{export.pk}"
    assert not leftovers.exists()


def finished_transfer(cells: dict[str, Any], owner: Any) -> CellRun:
    """A succeeded transfer of the fine-tune to tiny-llama-wide, its folder laid out as the
    engine's distillation leaves it: transferred/ with the manifest naming the target and a
    (seeded) LoRA adapter trained on that target."""
    cell = cell_create(
        project=cells["finetune"].project, kind="transfer",
        config={"source_cell": cells["finetune"].pk, "base_model": "tiny-llama-wide"},
        created_by=owner,
    )  # fmt: skip
    key = "runs/transfer-1"
    seeded_run(storage.local_path(storage.join(key, TRANSFERRED)), "tiny-llama-wide")
    return CellRun.objects.create(
        cell=cell, version=1, status=RunStatus.SUCCEEDED,
        inputs={"base_model": "tiny-llama-wide"}, outputs={"output_dir": key}, created_by=owner,
    )  # fmt: skip


def test_a_transfer_runs_export_is_the_transferred_adapter_on_the_target(
    start_worker, cells, owner, editor, viewer
) -> None:
    import gguf

    worker = start_worker()
    run = finished_transfer(cells, owner)
    adapter = export_from_the_page(run, editor, "adapter/as-trained", worker)
    assert adapter.key == "runs/transfer-1/transferred/exports/adapter-as-trained"
    assert check_stored(adapter, viewer)["trained_against"]["model"] == "tiny-llama-wide"

    exported = export_from_the_page(run, editor, "gguf/q8_0", worker)
    check_stored(exported, viewer)
    path = storage.local_path(storage.join(exported.key, exported.manifest["gguf_file"]))
    fields = {k: f.contents() for k, f in gguf.GGUFReader(path).fields.items()
              if k.startswith("llama.")}  # fmt: skip
    assert fields["llama.embedding_length"] == 96  # the target's width, not the source's 64
    page = client_for(viewer).get(reverse("run_detail", args=[run.pk])).content.decode()
    assert all(f["sha256"] in page for e in (adapter, exported) for f in e.files)


@pytest.fixture
def fake_run(cell_run: CellRun, settings, tmp_path: Path) -> CellRun:
    """A run whose files look finished: enough for the engine to start an export."""
    settings.SCRATCH_DIR = str(tmp_path / "scratch")
    return finish_finetune(cell_run)


def test_cancel_stops_the_export_and_leaves_no_files(fake_run: CellRun, owner) -> None:
    from workers.export_run import export_job

    export = export_create(run=fake_run, format="merged", by=owner)
    job = job_start(job_id=export.job_id, celery_task_id="task-1")
    job_cancel(job=job, by=owner)  # while it runs: the engine stops at its first stage
    export_job(Export.objects.select_related("run__cell").get(pk=export.pk), job.pk, "task-1")
    export = Export.objects.select_related("job").get(pk=export.pk)
    assert export.job.status == JobStatus.CANCELLED and export.files == []
    assert storage.keys_under(export.key) == []
    exports = storage.local_path(f"{fake_run.outputs['output_dir']}/exports")
    assert not exports.exists() or list(exports.iterdir()) == []


def test_a_failing_export_fails_its_job_saying_why_and_leaves_no_files(
    fake_run: CellRun, owner, viewer
) -> None:
    from workers.export_run import export_job

    # The fake adapter's config names no base model: the engine fails after copying files.
    export = export_create(run=fake_run, format="adapter", by=owner)
    job = job_start(job_id=export.job_id, celery_task_id="task-2")
    export_job(Export.objects.select_related("run__cell").get(pk=export.pk), job.pk, "task-2")
    export = Export.objects.select_related("job").get(pk=export.pk)
    assert export.job.status == JobStatus.FAILED and "base_model_name_or_path" in export.job.error
    assert export.files == [] and storage.keys_under(export.key) == []
    exports = storage.local_path(f"{fake_run.outputs['output_dir']}/exports")
    assert list(exports.iterdir()) == []  # the engine's staging folder went too
    panel = client_for(viewer).get(reverse("export_panel", args=[fake_run.pk])).content.decode()
    assert "base_model_name_or_path" in panel and "Download all" not in panel
    assert CellRun.objects.get(pk=fake_run.pk).status == RunStatus.SUCCEEDED  # run untouched


def test_an_export_whose_run_was_deleted_fails_its_job_instead_of_waiting(
    fake_run: CellRun, owner
) -> None:
    from workers.export_run import export_run_task

    export = export_create(run=fake_run, format="adapter", by=owner)
    CellRun.objects.filter(pk=fake_run.pk).delete()  # the export goes with it, not its job
    export_run_task.run(export.pk, export.job_id)
    job = Job.objects.get(pk=export.job_id)
    assert job.status == JobStatus.FAILED and "deleted before it was exported" in job.error
