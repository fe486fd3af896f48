"""What upload tests look at: the uploads bucket on the test S3 server (its objects and its
pending multipart uploads), and a small disk that fills up (a tmpfs the test mounts)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from tests.s3server import S3Server


def uploads_bucket() -> tuple[str, str]:
    """The bucket and key prefix of the uploads store (STORAGES["default"] on S3)."""
    options = settings.STORAGES["default"]["OPTIONS"]
    return options["bucket_name"], options["location"]


def bucket_objects(s3: S3Server) -> dict[str, bytes]:
    """Every object of the uploads bucket, by key under the uploads prefix."""
    bucket, prefix = uploads_bucket()
    client = s3.client()
    found = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        obj["Key"].removeprefix(f"{prefix}/"): client.get_object(Bucket=bucket, Key=obj["Key"])[
            "Body"
        ].read()
        for obj in found
    }


def pending_uploads(s3: S3Server) -> list[str]:
    """Keys of multipart uploads begun and neither completed nor aborted (S3 keeps their parts)."""
    bucket, _ = uploads_bucket()
    return [u["Key"] for u in s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def files_under(*folders: str | Path) -> list[str]:
    """Every file under the folders (a missing folder has none)."""
    return sorted(str(p) for folder in folders for p in Path(folder).rglob("*") if p.is_file())
