"""STORAGE_URL: where every file the product keeps lives, as Django STORAGES entries.

Two aliases, one per kind of file:
- `default`: what people upload (dataset versions), as Django FileFields store them;
- `artifacts`: what the workers make (run folders, evaluation results, transfer artifacts,
  exports), under keys such as `runs/12/adapter/adapter_model.safetensors`.

Unset, both are local folders (MEDIA_ROOT and DATA_DIR): `make run` needs no server. Set to
`s3://bucket[/prefix]?endpoint_url=...&region=...` (or AWS_STORAGE_BUCKET_NAME with the other
AWS_* variables django-storages reads), both live in one bucket of any S3-compatible store,
under `media/` and `artifacts/`; credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
or the host's role, never from the URL. `downloads=redirect` has file downloads answer 302 to a
presigned URL (valid `presign_seconds`, signed for `public_endpoint_url` when clients reach the
store by another address than the web does) instead of streaming through the web.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from django.core.exceptions import ImproperlyConfigured

S3_BACKEND = "webapp.core.s3.S3Storage"  # django-storages' S3Storage + how downloads leave
LOCAL_BACKEND = "django.core.files.storage.FileSystemStorage"
DATA_DIR_BACKEND = "webapp.core.storage.DataDirStorage"
# Query options of an s3:// URL (the first five as django-storages names them; the last two
# are webapp.core.s3's own).
S3_OPTIONS = {
    "endpoint_url": str,
    "region": str,
    "addressing_style": str,
    "signature_version": str,
    "presign_seconds": int,
    "downloads": str,
    "public_endpoint_url": str,
}
DOWNLOAD_MODES = ("stream", "redirect")  # webapp/core/downloads.py: how a download leaves


def _local(root: Path | None = None) -> dict[str, dict[str, object]]:
    """Local folders: `root` (file://), or MEDIA_ROOT and DATA_DIR as they are when used."""
    if root is None:
        return {"default": {"BACKEND": LOCAL_BACKEND}, "artifacts": {"BACKEND": DATA_DIR_BACKEND}}
    return {
        "default": {"BACKEND": LOCAL_BACKEND, "OPTIONS": {"location": str(root / "media")}},
        "artifacts": {"BACKEND": LOCAL_BACKEND, "OPTIONS": {"location": str(root)}},
    }


def _s3_options(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ImproperlyConfigured(f"STORAGE_URL needs a bucket: s3://BUCKET[/prefix], got {url!r}")
    if parts.username or parts.password:
        raise ImproperlyConfigured(
            "STORAGE_URL must not hold credentials: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or use the host's role) instead"
        )
    query = dict(parse_qsl(parts.query))
    unknown = sorted(set(query) - set(S3_OPTIONS))
    if unknown:
        raise ImproperlyConfigured(
            f"STORAGE_URL has unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(S3_OPTIONS)}"
        )
    try:
        presign = int(query.pop("presign_seconds", "300"))
    except ValueError:
        raise ImproperlyConfigured("STORAGE_URL: presign_seconds must be a number") from None
    if not 1 <= presign <= 604800:  # S3 signs for at most 7 days
        raise ImproperlyConfigured("STORAGE_URL: presign_seconds must be from 1 to 604800")
    downloads = query.pop("downloads", "stream")
    if downloads not in DOWNLOAD_MODES:
        raise ImproperlyConfigured(
            f"STORAGE_URL: downloads must be one of {', '.join(DOWNLOAD_MODES)}, got {downloads!r}"
        )
    public = query.pop("public_endpoint_url", "")
    if public and (urlsplit(public).scheme not in ("http", "https") or not urlsplit(public).netloc):
        raise ImproperlyConfigured(
            f"STORAGE_URL: public_endpoint_url must be an http(s):// address, got {public!r}"
        )
    from botocore.config import Config  # only hosts that use object storage need boto3

    options: dict[str, object] = {
        "bucket_name": parts.hostname,
        # Fail fast on an endpoint that does not answer; retry what S3 says is transient.
        # django-storages ignores its own signature_version/addressing_style once a client
        # config is given, so they go here. SigV4 throughout: botocore would presign with the
        # deprecated SigV2 otherwise.
        "client_config": Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 5, "mode": "standard"},
            signature_version=query.get("signature_version", "s3v4"),
            s3={"addressing_style": query["addressing_style"]}
            if "addressing_style" in query
            else None,
        ),
        "querystring_expire": presign,
        "file_overwrite": True,  # a key is written by one job; a retry replaces its own file
        "default_acl": None,
        "downloads": downloads,
        "public_endpoint_url": public or None,
    }
    if "endpoint_url" in query:
        options["endpoint_url"] = query["endpoint_url"]
    if "region" in query:
        options["region_name"] = query["region"]
    options["_prefix"] = parts.path.strip("/")
    return options


def storages_for(url: str, *, aws_bucket: str = "") -> dict[str, dict[str, object]]:
    """STORAGES entries `default` and `artifacts` for STORAGE_URL (empty: local folders)."""
    if not url and aws_bucket:
        url = f"s3://{aws_bucket}"  # django-storages reads the other AWS_* variables itself
    if not url:
        return _local()
    if url.startswith("file://"):
        root = Path(urlsplit(url).path)
        if not root.is_absolute() or urlsplit(url).netloc:
            raise ImproperlyConfigured(f"STORAGE_URL file:// needs an absolute path, got {url!r}")
        return _local(root)
    if not url.startswith("s3://"):
        raise ImproperlyConfigured(
            f"STORAGE_URL must start with s3:// or file://, got {url.split(':', 1)[0]!r}"
        )
    options = _s3_options(url)
    prefix = str(options.pop("_prefix"))
    return {
        alias: {
            "BACKEND": S3_BACKEND,
            "OPTIONS": {**options, "location": f"{prefix}/{folder}".strip("/")},
        }
        for alias, folder in (("default", "media"), ("artifacts", "artifacts"))
    }
