"""Streams bytes that arrive piece by piece (an upload's request body) into one key of an S3
store as a multipart upload, holding at most one part in memory and nothing on disk.

Every way out that is not `complete()` must be `abort()`: S3 keeps, and bills, the parts of
an upload that is neither completed nor aborted, and no listing of keys shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.files.storage import Storage

from webapp.core import storage

log = logging.getLogger(__name__)

PART_BYTES = storage.CHUNK_BYTES  # every part but the last must be at least 5 MiB
# What upload_part may answer, and complete_multipart_upload then needs back per part: S3
# refuses to complete an upload created with a checksum algorithm without each part's sum.
_CHECKSUMS = (
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
)


class ObjectStoreError(Exception):
    """The store refused or did not answer (botocore's errors, kept inside this module)."""


@contextmanager
def _store_errors(doing: str, key: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError  # object-storage hosts only

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise ObjectStoreError(f"{doing} {key!r} failed: {exc}") from exc


def is_object_store(store: Storage) -> bool:
    """True for an S3 store (django-storages), False for a local folder."""
    return getattr(store, "bucket_name", None) is not None and hasattr(type(store), "connection")


class MultipartWriter:
    """One multipart upload to `key` of `store`, started at once; `write` as bytes arrive."""

    def __init__(self, store: Storage, key: str, *, content_type: str) -> None:
        self.key = key
        self._client = store.connection.meta.client  # type: ignore[attr-defined]
        self._bucket: str = store.bucket_name  # type: ignore[attr-defined]
        self._object_key = storage.join(store.location, key)  # type: ignore[attr-defined]
        params = store.get_object_parameters(self._object_key)  # type: ignore[attr-defined]
        params.setdefault("ContentType", content_type or "application/octet-stream")
        if "ACL" not in params and getattr(store, "default_acl", None):
            params["ACL"] = store.default_acl  # type: ignore[attr-defined]
        with _store_errors("starting the upload of", key):
            answer = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._object_key, **params
            )
        self._upload_id: str | None = answer["UploadId"]
        self._parts: list[dict[str, object]] = []
        self._buffer = bytearray()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= PART_BYTES:
            self._send_buffer()

    def complete(self) -> None:
        """Sends what is left as the last part and makes the object appear under its key."""
        if self._buffer or not self._parts:  # an upload needs one part, even an empty one
            self._send_buffer()
        with _store_errors("completing the upload of", self.key):
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._object_key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._upload_id = None

    def abort(self) -> None:
        """Drops the parts sent so far; safe to call more than once, and after `complete`."""
        upload_id, self._upload_id = self._upload_id, None
        self._buffer = bytearray()
        if upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._object_key, UploadId=upload_id
            )
        except Exception:  # noqa: BLE001 - a cleanup path: never hide the failure that led here
            log.warning(
                "could not abort multipart upload %s of %s/%s; a bucket lifecycle rule "
                "(AbortIncompleteMultipartUpload) will have to remove its parts",
                upload_id,
                self._bucket,
                self._object_key,
                exc_info=True,
            )

    def _send_buffer(self) -> None:
        number = len(self._parts) + 1
        body, self._buffer = self._buffer, bytearray()  # handed over, not copied
        with _store_errors(f"sending part {number} of", self.key):
            answer = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._object_key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
            )
        part: dict[str, object] = {"PartNumber": number, "ETag": answer["ETag"]}
        part.update({name: answer[name] for name in _CHECKSUMS if name in answer})
        self._parts.append(part)
