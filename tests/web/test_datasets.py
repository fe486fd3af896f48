"""Dataset upload: streaming to disk, size limit enforced mid-stream, versioning."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadhandler import StopUpload
from django.urls import reverse

from tests.web.conftest import CHAT_JSONL, Upload, client_for
from webapp.datasets.models import Dataset, DatasetVersion, VersionStatus
from webapp.datasets.uploads import LimitedStreamingUploadHandler
from webapp.jobs.models import Job


def upload(client, team, name: str, content: bytes, **extra):
    return client.post(
        reverse("dataset_upload", args=[team.pk]),
        {"name": name, "file": Upload.make("data.jsonl", content)},
        **extra,
    )


def leftover_files() -> list[str]:
    tmp = Path(settings.FILE_UPLOAD_TEMP_DIR)
    return [p.name for p in tmp.iterdir()] if tmp.exists() else []


def test_upload_streams_to_storage_and_queues_validation(
    team, editor, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = upload(client_for(editor), team, "greetings", CHAT_JSONL)
    version = DatasetVersion.objects.get()
    assert response["Location"] == reverse("dataset_version_detail", args=[version.pk])
    assert version.version == 1 and version.size == len(CHAT_JSONL)
    assert version.sha256 == hashlib.sha256(CHAT_JSONL).hexdigest()
    assert version.status == VersionStatus.UPLOADED
    assert Path(version.file.path).read_bytes() == CHAT_JSONL
    assert str(settings.MEDIA_ROOT) in version.file.path
    job = version.validation_job
    assert job.kind == "validate_dataset" and job.celery_task_id and job.team == team
    assert len(callbacks) == 1  # the task is sent only after commit
    assert leftover_files() == []


def test_reupload_same_name_adds_a_version(team, owner) -> None:
    client = client_for(owner)
    upload(client, team, "greetings", CHAT_JSONL)
    upload(client, team, "greetings", CHAT_JSONL + CHAT_JSONL)
    dataset = Dataset.objects.get(team=team, name="greetings")
    v1, v2 = dataset.versions.order_by("version")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.file.path != v2.file.path
    assert Path(v1.file.path).read_bytes() == CHAT_JSONL  # never overwritten
    assert v2.size == 2 * len(CHAT_JSONL)
    page = client.get(reverse("dataset_detail", args=[dataset.pk])).content.decode()
    assert "v1" in page and "v2" in page


def test_upload_over_limit_is_aborted_while_streaming(team, owner, settings) -> None:
    settings.MAX_UPLOAD_BYTES = 100_000
    big = b"x" * 300_000  # several 64 KiB chunks: some are written before the abort
    response = upload(client_for(owner), team, "huge", big)
    assert response.status_code == 413
    assert "larger than the 97.7\xa0KB upload limit" in response.content.decode()
    assert not DatasetVersion.objects.exists() and not Job.objects.exists()
    assert leftover_files() == []
    media = Path(settings.MEDIA_ROOT)
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


def test_declared_oversized_body_refused_before_reading(team, owner, settings) -> None:
    settings.MAX_UPLOAD_BYTES = 1_000
    response = upload(client_for(owner), team, "huge", b"y" * 1_200_000)
    assert response.status_code == 413
    assert "upload limit" in response.content.decode()
    assert not DatasetVersion.objects.exists()
    assert leftover_files() == []


def test_handler_deletes_the_partial_file_when_the_limit_is_crossed(settings) -> None:
    handler = LimitedStreamingUploadHandler(max_bytes=10)
    handler.new_file("file", "data.jsonl", "application/json", None)
    handler.receive_data_chunk(b"12345678", 0)
    partial = handler.partial_path
    assert partial and os.path.exists(partial)  # streamed to disk, chunk by chunk
    with pytest.raises(StopUpload):
        handler.receive_data_chunk(b"9abc", 8)
    assert not os.path.exists(partial)
    assert "upload limit" in handler.error


def test_json_client_gets_json_errors_and_redirects(team, owner, settings) -> None:
    client = client_for(owner)
    ok = upload(client, team, "greetings", CHAT_JSONL, HTTP_ACCEPT="application/json")
    assert ok.status_code == 200 and ok.json()["redirect"].startswith("/dataset-versions/")
    settings.MAX_UPLOAD_BYTES = 10
    bad = upload(client, team, "greetings", CHAT_JSONL, HTTP_ACCEPT="application/json")
    assert bad.status_code == 413 and "upload limit" in bad.json()["error"]
    empty = upload(client, team, "greetings", b"", HTTP_ACCEPT="application/json")
    assert empty.status_code == 400 and empty.json()["ok"] is False


def test_upload_page_renders_dropzone_and_progress(team, owner) -> None:
    page = client_for(owner).get(reverse("dataset_upload", args=[team.pk])).content.decode()
    assert 'id="dropzone"' in page and "<progress" in page and "upload.js" in page


def test_version_page_shows_status_and_report(dataset_version, viewer) -> None:
    DatasetVersion.objects.filter(pk=dataset_version.pk).update(
        status=VersionStatus.INVALID,
        report={"ok": False, "errors": [{"line": 3, "message": "bad role"}]},
    )
    client = client_for(viewer)
    page = client.get(reverse("dataset_version_detail", args=[dataset_version.pk])).content.decode()
    assert "Invalid" in page and "bad role" in page and "hx-trigger" not in page
    fragment = client.get(
        reverse("dataset_version_detail", args=[dataset_version.pk]), HTTP_HX_REQUEST="true"
    ).content.decode()
    assert fragment.lstrip().startswith("<section") and "bad role" in fragment
