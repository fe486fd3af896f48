"""/v1/files into the uploads store (issues 20 and 21), through the real `openai` SDK against a
live server: on S3 the body streams straight into the bucket as a multipart upload, the
size cap stops it while it streams, and a full disk is a clear 507 in OpenAI's error shape.

The bucket is on moto's standalone S3 server, reached by boto3 over HTTP (tests/s3server.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import openai
import pytest
from django.conf import settings
from django.test import Client

from tests.api.test_api_basics import ERROR_KEYS, GOOD
from tests.s3server import S3Server, backend, s3, use_s3
from tests.tmpfs import small_tmpfs
from tests.upload_checks import bucket_objects, files_under, pending_uploads
from webapp.datasets.models import Dataset, DatasetVersion
from webapp.storage_url import storages_for

__all__ = ["backend", "s3"]  # fixtures

MIB = 1024 * 1024


def jsonl_of(size: int) -> bytes:
    return (GOOD * (size // len(GOOD) + 1))[:size]


def host_files() -> list[str]:
    """Files on the web host: the upload temp folder and the local uploads folder."""
    return files_under(settings.FILE_UPLOAD_TEMP_DIR, settings.MEDIA_ROOT)


def test_a_file_sent_with_the_sdk_streams_into_the_bucket(
    s3: S3Server, settings, monkeypatch, sdk, owner_key, team
) -> None:
    use_s3(s3, settings, monkeypatch, "sdk-upload")
    data = jsonl_of(17 * MIB)
    client = sdk(owner_key)
    sent = client.files.create(file=("train.jsonl", data), purpose="fine-tune")
    assert sent.bytes == len(data) and sent.filename == "train.jsonl"
    version = DatasetVersion.objects.get()
    assert version.file.name.startswith(f"datasets/team-{team.pk}/upload-")
    assert bucket_objects(s3) == {version.file.name: data}
    assert version.sha256 == hashlib.sha256(data).hexdigest()
    assert pending_uploads(s3) == []
    assert not Path(settings.FILE_UPLOAD_TEMP_DIR).exists() and host_files() == []
    assert client.files.content(sent.id).content == data
    assert client.files.delete(sent.id).deleted
    assert bucket_objects(s3) == {}


def test_a_file_over_the_limit_is_refused_while_it_streams(
    backend: str, s3: S3Server, settings, sdk, owner_key
) -> None:
    settings.MAX_UPLOAD_BYTES = 9 * MIB
    with pytest.raises(openai.APIStatusError) as big:
        sdk(owner_key).files.create(
            file=("big.jsonl", jsonl_of(9 * MIB + MIB // 2)), purpose="fine-tune"
        )
    assert big.value.status_code == 413 and big.value.code == "file_too_large"
    assert "larger than the 9.0\xa0MB upload limit" in big.value.message
    assert not DatasetVersion.objects.exists() and host_files() == []
    if backend == "s3":
        assert bucket_objects(s3) == {} and pending_uploads(s3) == []


def test_a_body_that_ends_mid_file_leaves_no_upload_behind(
    s3: S3Server, settings, monkeypatch, owner_key
) -> None:
    """The client went away: the body stops inside the file, with no closing boundary."""
    use_s3(s3, settings, monkeypatch, "client-gone")
    boundary = "tunebook-cut"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode() + jsonl_of(9 * MIB)  # one 8 MiB part has gone up when the body ends
    response = Client().post(
        "/v1/files",
        data=body,
        content_type=f"multipart/form-data; boundary={boundary}",
        HTTP_AUTHORIZATION=f"Bearer {owner_key}",
    )
    assert response.status_code == 400 and set(response.json()["error"]) == ERROR_KEYS
    assert not DatasetVersion.objects.exists()
    assert bucket_objects(s3) == {} and pending_uploads(s3) == []


def test_a_full_disk_is_a_507_in_openais_error_shape(
    settings, tmp_path: Path, sdk, owner_key
) -> None:
    settings.STORAGES = {**settings.STORAGES, **storages_for("")}
    with small_tmpfs(tmp_path / "small", 1024) as disk:
        settings.MEDIA_ROOT = str(disk / "media")
        settings.FILE_UPLOAD_TEMP_DIR = str(disk / "tmp")
        client = sdk(owner_key)
        with pytest.raises(openai.APIStatusError) as full:
            client.files.create(file=("big.jsonl", jsonl_of(2 * MIB)), purpose="fine-tune")
        assert full.value.status_code == 507 and full.value.code == "insufficient_storage"
        assert set(full.value.body) == ERROR_KEYS and full.value.body["param"] == "file"
        assert "ran out of disk space" in full.value.message
        assert "tell the operator" in full.value.message
        assert not Dataset.objects.exists() and host_files() == []
        fits = client.files.create(file=("small.jsonl", GOOD), purpose="fine-tune")
        assert client.files.content(fits.id).content == GOOD
