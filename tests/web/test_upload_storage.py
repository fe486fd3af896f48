"""Browser uploads into the uploads store (issues 20 and 21): on S3 the body streams straight
into the bucket as a multipart upload (nothing staged on the web host's disk), the size cap
stops it while it streams, and every failure, a full disk included, leaves nothing behind.

The bucket is on moto's standalone S3 server, reached by boto3 over HTTP (tests/s3server.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadhandler import StopUpload
from django.urls import reverse

from tests.s3server import S3Server, backend, s3, use_s3
from tests.tmpfs import small_tmpfs
from tests.upload_checks import (
    bucket_objects,
    files_under,
    pending_uploads,
    uploads_bucket,
)
from tests.web.conftest import CHAT_JSONL, client_for
from tests.web.test_datasets import upload
from webapp.datasets.models import Dataset, DatasetPurpose, DatasetVersion
from webapp.datasets.services import dataset_version_create
from webapp.datasets.uploads import LimitedStreamingUploadHandler
from webapp.jobs.models import Job
from webapp.storage_url import storages_for

__all__ = ["backend", "s3"]  # fixtures

MIB = 1024 * 1024


def jsonl_of(size: int) -> bytes:
    """About `size` bytes of chat lines (the validator is not run here; the bytes matter)."""
    return (CHAT_JSONL * (size // len(CHAT_JSONL) + 1))[:size]


def host_files() -> list[str]:
    """Files on the web host: the upload temp folder and the local uploads folder."""
    return files_under(settings.FILE_UPLOAD_TEMP_DIR, settings.MEDIA_ROOT)


def test_a_browser_upload_streams_into_the_bucket_as_a_multipart_upload(
    s3: S3Server, settings, monkeypatch, team, editor
) -> None:
    use_s3(s3, settings, monkeypatch, "browser-upload")
    data = jsonl_of(17 * MIB)  # three parts: 8 MiB, 8 MiB and the rest
    response = upload(client_for(editor), team, "big", data)
    version = DatasetVersion.objects.get()
    assert response.status_code == 302
    assert version.file.name.startswith(f"datasets/team-{team.pk}/upload-")
    assert version.file.name.endswith("/data.jsonl")
    assert bucket_objects(s3) == {version.file.name: data}
    assert version.size == len(data) and version.sha256 == hashlib.sha256(data).hexdigest()
    bucket, prefix = uploads_bucket()
    head = s3.client().head_object(Bucket=bucket, Key=f"{prefix}/{version.file.name}")
    assert head["ETag"].strip('"').endswith("-3")  # "<md5>-<parts>": a three-part upload
    assert pending_uploads(s3) == []
    # Nothing was staged on this host: the temp folder was never even made.
    assert not Path(settings.FILE_UPLOAD_TEMP_DIR).exists() and host_files() == []


def test_an_upload_over_the_limit_stops_while_streaming_and_leaves_nothing(
    backend: str, s3: S3Server, settings, team, owner
) -> None:
    settings.MAX_UPLOAD_BYTES = 9 * MIB
    # Within the announced-size allowance, so it is refused only once 9 MiB have streamed
    # (on S3, after the first 8 MiB part went up).
    big = jsonl_of(9 * MIB + MIB // 2)
    response = upload(client_for(owner), team, "huge", big)
    assert response.status_code == 413
    assert "larger than the 9.0\xa0MB upload limit" in response.content.decode()
    assert not DatasetVersion.objects.exists() and not Job.objects.exists()
    assert host_files() == []
    if backend == "s3":
        assert bucket_objects(s3) == {} and pending_uploads(s3) == []


def test_the_handler_aborts_the_multipart_upload_it_began(
    s3: S3Server, settings, monkeypatch
) -> None:
    use_s3(s3, settings, monkeypatch, "handler-aborts")
    bucket, prefix = uploads_bucket()
    chunk = b"x" * 64 * 1024  # what Django hands a handler at a time

    over = LimitedStreamingUploadHandler(max_bytes=9 * MIB, team_id=7)
    over.new_file("file", "data.jsonl", "application/jsonl", None)
    for start in range(0, 9 * MIB, len(chunk)):
        over.receive_data_chunk(chunk, start)
    key = f"{prefix}/{over.stored_key}"
    assert pending_uploads(s3) == [key]
    (begun,) = s3.client().list_multipart_uploads(Bucket=bucket)["Uploads"]
    parts = s3.client().list_parts(Bucket=bucket, Key=key, UploadId=begun["UploadId"])["Parts"]
    assert [p["Size"] for p in parts] == [8 * MIB]  # one part in the bucket, the rest in memory
    with pytest.raises(StopUpload):
        over.receive_data_chunk(b"y", 9 * MIB)
    assert "upload limit" in (over.error or "") and over.error_status == 413
    assert pending_uploads(s3) == [] and bucket_objects(s3) == {}

    gone = LimitedStreamingUploadHandler(team_id=7)  # the client goes away mid-body
    gone.new_file("file", "data.jsonl", "application/jsonl", None)
    gone.receive_data_chunk(chunk, 0)
    assert pending_uploads(s3) == [f"{prefix}/{gone.stored_key}"]
    gone.upload_interrupted()
    assert pending_uploads(s3) == [] and bucket_objects(s3) == {}
    assert host_files() == []


def test_a_streamed_file_that_no_version_takes_is_removed_from_the_bucket(
    s3: S3Server, settings, monkeypatch, team, owner
) -> None:
    use_s3(s3, settings, monkeypatch, "no-version-no-object")
    client = client_for(owner)
    assert upload(client, team, "", CHAT_JSONL).status_code == 400  # the form: no name
    assert upload(client, team, "empty", b"").status_code == 400  # the service: no bytes
    dataset_version_create(
        team=team,
        name="prompts",
        upload=_in_memory(CHAT_JSONL),
        created_by=owner,
        purpose=DatasetPurpose.EVALUATION,
    )
    kept = DatasetVersion.objects.get().file.name
    # The service refuses it: a training file under an evaluation dataset's name.
    refused = client.post(
        reverse("dataset_upload", args=[team.pk]),
        {"name": "prompts", "purpose": "training", "file": _in_memory(CHAT_JSONL)},
    )
    assert refused.status_code == 400 and "holds evaluation prompts" in refused.content.decode()
    assert list(bucket_objects(s3)) == [kept] and pending_uploads(s3) == []
    assert DatasetVersion.objects.count() == 1 and host_files() == []


def test_a_store_that_fails_is_a_clear_503_not_a_traceback(
    s3: S3Server, settings, monkeypatch, team, owner
) -> None:
    use_s3(s3, settings, monkeypatch, "store-gone")
    s3.client().delete_bucket(Bucket=uploads_bucket()[0])  # the store refuses every write
    response = upload(client_for(owner), team, "data", CHAT_JSONL)
    assert response.status_code == 503
    page = response.content.decode()
    assert "The file could not be stored" in page and "Traceback" not in page
    assert not DatasetVersion.objects.exists() and host_files() == []


def _in_memory(content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("data.jsonl", content, content_type="application/octet-stream")


@pytest.mark.parametrize("full", ["temp-folder", "uploads-folder"])
def test_a_full_disk_refuses_the_upload_clearly_and_leaves_nothing_behind(
    full: str, settings, tmp_path: Path, team, editor
) -> None:
    """temp-folder: the 1 MiB disk holds both folders and fills while the body streams;
    uploads-folder: the temp file is elsewhere and the disk fills while it is copied in."""
    settings.STORAGES = {**settings.STORAGES, **storages_for("")}
    with small_tmpfs(tmp_path / "small", 1024) as disk:
        settings.MEDIA_ROOT = str(disk / "media")
        if full == "temp-folder":
            settings.FILE_UPLOAD_TEMP_DIR = str(disk / "tmp")
        client = client_for(editor)
        refused = upload(client, team, "big", jsonl_of(2 * MIB))
        page = refused.content.decode()
        assert refused.status_code == 507
        assert "The server ran out of disk space while storing this file" in page
        assert "tell the operator" in page and "Traceback" not in page
        as_json = upload(client, team, "big", jsonl_of(2 * MIB), HTTP_ACCEPT="application/json")
        assert as_json.status_code == 507 and "out of disk space" in as_json.json()["error"]
        assert not Dataset.objects.exists() and not Job.objects.exists()
        assert host_files() == []
        # Nothing half-written holds the space: a file that fits goes in.
        assert upload(client, team, "small", CHAT_JSONL).status_code == 302
        version = DatasetVersion.objects.get()
        assert Path(version.file.path).read_bytes() == CHAT_JSONL
        assert host_files() == [version.file.path]
