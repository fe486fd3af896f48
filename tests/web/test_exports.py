"""Exports from the product without a worker process: export_create's refusals (each with
its field and message, nothing queued), the job it queues, the run page's Export panel,
downloads streamed from storage, cancel and replacement. The worker's side is in
test_exports_worker.py; the access matrix in test_access.py; the API in tests/api."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from tests.web.conftest import client_for
from tests.web.export_fixtures import ADAPTER_BYTES, finish_finetune, finished_export
from webapp.core import storage
from webapp.core.models import BaseModel
from webapp.exports.models import Export
from webapp.exports.selectors import export_choices, export_source_key
from webapp.exports.services import export_create, export_replace_older
from webapp.jobs import queue
from webapp.jobs.models import Job, JobStatus
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.services import cell_create, cell_run_create


@pytest.fixture
def done_run(cell_run: CellRun) -> CellRun:
    return finish_finetune(cell_run)


def refusal(run: CellRun, **kw) -> tuple[str, str, str]:
    """(field, code, message) of export_create's refusal; nothing may have been queued."""
    jobs = Job.objects.count()
    with pytest.raises(ValidationError) as err:
        export_create(run=run, by=None, **kw)
    assert Job.objects.count() == jobs and not Export.objects.filter(run=run).exists()
    field, errors = next(iter(err.value.error_dict.items()))
    return field, errors[0].code, errors[0].messages[0]


def test_an_unfinished_run_is_refused(cell_run: CellRun) -> None:
    field, code, message = refusal(cell_run, format="adapter")
    assert (field, code) == ("run", "export_unfinished_run")
    assert "is queued: only a finished (succeeded) run has a final adapter" in message


def test_unknown_format_and_type_are_refused_naming_the_choices(done_run: CellRun) -> None:
    field, code, message = refusal(done_run, format="onnx")
    assert (field, code) == ("format", "export_bad_format")
    assert "choose merged, gguf, adapter" in message
    field, code, message = refusal(done_run, format="gguf", type="q2_k")
    assert (field, code) == ("type", "export_bad_type")
    assert "A gguf export has type f16 or q8_0 or q4_0, not 'q2_k'" in message
    field, code, message = refusal(done_run, format="merged", type="q8_0")
    assert "A merged export has type bf16 or f16" in message


def test_gguf_of_an_architecture_the_writer_does_not_know_names_the_supported_ones(
    cells, owner
) -> None:
    BaseModel.objects.create(
        name="gpt2-local", label="GPT-2", kind="local", source="/models/gpt2",
        model_type="gpt2", parameters=124_000_000, context_length=1024, licence="MIT",
    )  # fmt: skip
    run = finish_finetune(
        cell_run_create(cell=cells["finetune"], created_by=owner), base_model="gpt2-local"
    )
    field, code, message = refusal(run, format="gguf", type="q8_0")
    assert (field, code) == ("format", "export_unsupported_architecture")
    assert message == (
        "The GGUF writer does not know the gpt2 architecture of gpt2-local; it supports "
        "llama, gemma3_text, gemma3. Merged and adapter exports work for any architecture."
    )
    gguf = next(c for c in export_choices(run=run) if c["format"] == "gguf")
    assert gguf["unavailable"] == message
    assert export_create(run=run, format="merged", by=owner).type == "bf16"  # others still go


def test_gemma_3_registered_from_its_gguf_offers_gguf_export(cells, owner) -> None:
    run = finish_finetune(
        cell_run_create(cell=cells["finetune"], created_by=owner), base_model="gemma-3-270m"
    )
    gguf = next(c for c in export_choices(run=run) if c["format"] == "gguf")
    assert gguf["unavailable"] is None
    assert export_create(run=run, format="gguf", type="q4_0", by=owner).type == "q4_0"


def test_a_run_whose_adapter_is_gone_is_refused(done_run: CellRun) -> None:
    storage.delete_tree(done_run.outputs["output_dir"])
    field, code, message = refusal(done_run, format="adapter")
    assert (field, code) == ("run", "export_no_adapter") and "not in storage" in message


def test_an_export_is_a_gpu_job_sent_by_name_one_per_target_at_a_time(
    done_run: CellRun, owner
) -> None:
    export = export_create(run=done_run, format="gguf", type="q8_0", by=owner)
    job = Job.objects.get(pk=export.job_id)
    assert job.kind == "export" and job.status == JobStatus.QUEUED
    assert job.params["_task"]["path"] == queue.EXPORT_RUN
    assert job.params["_task"]["args"] == [export.pk, job.pk]
    assert job.params["_task"]["queue"] == queue.GPU
    assert export.key == f"{done_run.outputs['output_dir']}/exports/gguf-q8_0"
    field, code, message = refusal_again(done_run, "gguf", "q8_0")
    assert code == "export_in_progress" and f"export #{export.pk}" in message
    assert export_create(run=done_run, format="gguf", type="f16", by=owner).type == "f16"
    assert export_create(run=done_run, format="adapter", by=owner).type == "as-trained"


def refusal_again(run: CellRun, fmt: str, type_: str) -> tuple[str, str, str]:
    with pytest.raises(ValidationError) as err:
        export_create(run=run, format=fmt, type=type_, by=None)
    field, errors = next(iter(err.value.error_dict.items()))
    return field, errors[0].code, errors[0].messages[0]


def test_a_transfer_run_exports_its_transferred_adapter(cells, done_run: CellRun, owner) -> None:
    cell = cell_create(
        project=cells["finetune"].project,
        kind="transfer",
        config={"source_cell": cells["finetune"].pk, "base_model": "tiny-llama"},
        created_by=owner,
    )
    run = CellRun.objects.create(
        cell=cell, version=1, status=RunStatus.SUCCEEDED, inputs={"base_model": "tiny-llama"},
        outputs={"output_dir": "runs/transfer-9"}, created_by=owner,
    )  # fmt: skip
    assert export_source_key(run=run) == "runs/transfer-9/transferred"
    field, code, _ = refusal(run, format="adapter")
    assert code == "export_no_adapter"  # nothing stored there yet


def test_run_page_panel_offers_formats_to_editors_only(done_run: CellRun, editor, viewer) -> None:
    page = client_for(editor).get(reverse("run_detail", args=[done_run.pk])).content.decode()
    assert "<h3>Export</h3>" in page and 'value="gguf/q4_0"' in page
    assert 'value="merged/bf16"' in page and 'value="adapter/as-trained"' in page
    assert "No exports yet." in page
    page = client_for(viewer).get(reverse("run_detail", args=[done_run.pk])).content.decode()
    assert "<h3>Export</h3>" in page and 'value="gguf/q4_0"' not in page


def test_start_from_the_panel_then_it_polls_and_cancel_keeps_nothing(
    done_run: CellRun, editor
) -> None:
    client = client_for(editor)
    response = client.post(reverse("export_start", args=[done_run.pk]), {"export": "gguf/q8_0"})
    assert response.status_code == 302
    export = Export.objects.get(run=done_run)
    assert (export.format, export.type, export.created_by) == ("gguf", "q8_0", editor)
    panel = client.get(reverse("export_panel", args=[done_run.pk])).content.decode()
    assert "every 2s" in panel and "gguf q8_0" in panel and "Cancel export" in panel
    again = client.post(
        reverse("export_start", args=[done_run.pk]), {"export": "gguf/q8_0"}, follow=True
    )
    assert "is being exported as gguf q8_0 already" in again.content.decode()
    client.post(reverse("export_cancel", args=[export.pk]))
    assert Job.objects.get(pk=export.job_id).status == JobStatus.CANCELLED
    panel = client.get(reverse("export_panel", args=[done_run.pk])).content.decode()
    assert "every 2s" not in panel and "Cancelled: no files were kept." in panel


def test_refusals_show_on_the_run_page(cell_run: CellRun, editor) -> None:
    response = client_for(editor).post(
        reverse("export_start", args=[cell_run.pk]), {"export": "adapter/as-trained"}, follow=True
    )
    assert "only a finished (succeeded) run has a final adapter" in response.content.decode()


def test_files_show_size_and_hash_and_stream_from_storage(done_run: CellRun, owner, viewer) -> None:
    export = finished_export(done_run, owner)
    client = client_for(viewer)
    panel = client.get(reverse("export_panel", args=[done_run.pk])).content.decode()
    f = next(f for f in export.files if f["name"] == "adapter_model.safetensors")
    assert f["bytes"] == len(ADAPTER_BYTES) and f["sha256"] in panel and "2.1\xa0KB" in panel
    assert "kept the local base" in panel  # the warning, with no server path (page scan)

    response = client.get(reverse("export_file", args=[export.pk, f["name"]]))
    assert response.streaming and b"".join(response.streaming_content) == ADAPTER_BYTES
    assert response["Content-Length"] == str(len(ADAPTER_BYTES))
    assert 'filename="adapter_model.safetensors"' in response["Content-Disposition"]
    missing = client.get(reverse("export_file", args=[export.pk, "export.json.bak"]))
    assert missing.status_code == 404

    response = client.get(reverse("export_zip", args=[export.pk]))
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = archive.namelist()
    assert names == [
        "adapter-as-trained/adapter_model.safetensors",
        "adapter-as-trained/adapter_config.json",
        "adapter-as-trained/export.json",
    ]
    assert archive.read(names[0]) == ADAPTER_BYTES


def test_a_later_export_of_the_same_kind_replaces_the_earlier_files(
    done_run: CellRun, owner, viewer
) -> None:
    first = finished_export(done_run, owner)
    second = export_create(run=done_run, format="adapter", by=owner)
    assert export_replace_older(export_id=second.pk) == 1
    first = Export.objects.get(pk=first.pk)
    assert first.status == "replaced" and first.replaced_by == second and first.files == []
    url = reverse("export_file", args=[first.pk, "adapter_model.safetensors"])
    assert client_for(viewer).get(url).status_code == 404
    panel = client_for(viewer).get(reverse("export_panel", args=[done_run.pk])).content.decode()
    assert f"A later export of the same format and type (#{second.pk})" in panel
