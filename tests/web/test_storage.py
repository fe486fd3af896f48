"""The storage layer (issue 21): one API over a local folder and a real S3-compatible server.

Every contract test runs on both backends: the local folder `make run` uses, and a bucket on
moto's standalone server reached by boto3 over HTTP (tests/s3server.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from tests.s3server import S3Server, backend, credentials_env, s3, use_s3
from webapp.core import storage

__all__ = ["backend", "s3"]  # fixtures: every contract test runs on both backends
from webapp.storage_url import storages_for


def write_run(folder: Path) -> dict[str, bytes]:
    """A small run folder: an adapter, a nested checkpoint and a manifest."""
    files = {
        "adapter/adapter_model.safetensors": os.urandom(3000),
        "adapter/adapter_config.json": b'{"r": 8}',
        "checkpoints/step-000002/state.pt": os.urandom(500),
        "manifest.json": b'{"steps": 2}',
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return files


def test_a_run_folder_goes_up_with_its_manifest_last_and_comes_back_whole(
    backend: str, tmp_path: Path
) -> None:
    files = write_run(tmp_path / "made")
    sent = storage.put_tree("runs/7", tmp_path / "made", last=["manifest.json"])
    assert sent[-1] == "runs/7/manifest.json"  # present means complete
    assert sorted(sent) == sorted(f"runs/7/{rel}" for rel in files)
    assert storage.keys_under("runs/7") == sorted(sent)

    got = storage.get_tree("runs/7", tmp_path / "fetched")
    assert {p.relative_to(tmp_path / "fetched").as_posix(): p.read_bytes() for p in got} == files
    assert not list((tmp_path / "fetched").rglob(".*"))  # no temporary file left behind
    assert storage.delete_tree("runs/7") == len(files)
    assert storage.keys_under("runs/7") == []


def test_only_the_local_backend_has_host_paths(backend: str, tmp_path: Path, settings) -> None:
    (tmp_path / "a.txt").write_text("hello")
    storage.put_file("exports/a.txt", tmp_path / "a.txt")
    path = storage.local_path("exports/a.txt")
    if backend == "local":
        assert path == Path(settings.DATA_DIR) / "exports/a.txt"
    else:
        assert path is None
        assert not (Path(settings.DATA_DIR) / "exports").exists()  # nothing on this host


def test_a_missing_key_fails_without_leaving_half_a_file(backend: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        storage.get_file("runs/404/manifest.json", tmp_path / "x" / "manifest.json")
    assert list((tmp_path / "x").iterdir()) == []
    assert storage.keys_under("runs/404") == []


def test_a_large_file_goes_to_s3_as_a_multipart_upload_and_streams_back(
    s3: S3Server, tmp_path: Path, settings, monkeypatch
) -> None:
    use_s3(s3, settings, monkeypatch, "multipart")
    data = os.urandom(20 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(data)
    storage.put_file("runs/8/big.bin", tmp_path / "big.bin")
    options = settings.STORAGES["artifacts"]["OPTIONS"]
    head = s3.client().head_object(
        Bucket=options["bucket_name"], Key=f"{options['location']}/runs/8/big.bin"
    )
    assert head["ContentLength"] == len(data)
    assert "-" in head["ETag"]  # S3 writes "<md5>-<parts>" for a multipart upload, one md5 else
    chunks = list(storage.read_chunks("runs/8/big.bin"))
    assert len(chunks) > 1 and max(map(len, chunks)) <= storage.CHUNK_BYTES
    assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(data).digest()


def test_keys_never_leave_their_store() -> None:
    assert storage.join("runs", "2", "adapter") == "runs/2/adapter"
    for bad in (("/etc", "passwd"), ("runs", "..", "..", "x")):
        with pytest.raises(ValueError, match="not a storage key"):
            storage.join(*bad)


def test_storage_url_picks_the_backend_and_refuses_what_would_go_wrong() -> None:
    local = storages_for("")
    assert local["artifacts"]["BACKEND"].endswith("DataDirStorage")
    assert "OPTIONS" not in local["default"]  # follows MEDIA_ROOT
    assert storages_for("file:///srv/tb")["artifacts"]["OPTIONS"] == {"location": "/srv/tb"}
    s3 = storages_for("s3://bkt/tb?endpoint_url=http://minio:9000&region=eu-west-1")
    assert s3["default"]["OPTIONS"]["location"] == "tb/media"
    assert s3["artifacts"]["OPTIONS"]["location"] == "tb/artifacts"
    assert s3["artifacts"]["OPTIONS"]["endpoint_url"] == "http://minio:9000"
    assert s3["artifacts"]["OPTIONS"]["region_name"] == "eu-west-1"
    assert storages_for("", aws_bucket="bkt")["default"]["OPTIONS"]["bucket_name"] == "bkt"
    refused = {
        "s3://key:secret@bkt": "must not hold credentials",
        "s3://bkt?endpoint=http://x": "unknown option",
        "gs://bkt": "must start with s3:// or file://",
        "file://relative/x": "absolute path",
        "s3:///nobucket": "needs a bucket",
    }
    for url, message in refused.items():
        with pytest.raises(ImproperlyConfigured, match=message):
            storages_for(url)


def test_web_and_worker_refuse_to_start_on_a_bucket_that_does_not_answer(
    s3: S3Server, tmp_path: Path
) -> None:
    env = {**os.environ, **credentials_env(), "DATA_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[2]
    python = Path(sys.executable)

    def start(command: list[str], url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            env={**env, "STORAGE_URL": url},
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )

    check = [str(python), "manage.py", "check"]
    worker = [str(python.with_name("celery")), "-A", "workers", "worker", "-P", "solo"]
    for command in (check, worker):
        refused = start(command, s3.url("no-such-bucket"))
        assert refused.returncode != 0
        assert "bucket 'no-such-bucket'" in refused.stderr and "NoSuchBucket" in refused.stderr
    assert start(check, s3.url(s3.make_bucket("answers"))).returncode == 0


def test_storage_move_copies_a_one_box_folder_into_the_bucket_and_checks_it(
    s3: S3Server, settings, monkeypatch, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    files = write_run(old / "runs" / "3")
    (old / "media" / "datasets").mkdir(parents=True)
    (old / "media" / "datasets" / "a.jsonl").write_text('{"messages": []}\n')
    (old / "secret_key").write_text("not moved")
    with pytest.raises(CommandError, match="set STORAGE_URL to the bucket first"):
        settings.DATA_DIR = old
        call_command("storage_move", "--from", str(old))
    use_s3(s3, settings, monkeypatch, "moved")

    out = io.StringIO()
    call_command("storage_move", "--from", str(old), stdout=out)
    assert "copied 5, already there 0, failed the check 0" in out.getvalue()
    assert storage.keys_under("runs/3") == sorted(f"runs/3/{rel}" for rel in files)
    assert storage.read_bytes("datasets/a.jsonl", store=storage.uploads()) == b'{"messages": []}\n'
    assert storage.keys_under("") == sorted(f"runs/3/{rel}" for rel in files)  # no secret_key

    out = io.StringIO()
    call_command("storage_move", "--from", str(old), "--delete", stdout=out)
    assert "copied 0, already there 5" in out.getvalue()
    assert not [p for p in old.rglob("*") if p.is_file() and p.name != "secret_key"]
