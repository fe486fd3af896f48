"""Streaming upload handler that enforces MAX_UPLOAD_BYTES while the body arrives.

Django's default handlers buffer to memory or a temp file with no size cap. This one hashes
each chunk on the way, stops as soon as the limit (or the team's storage left) is crossed,
and sends the chunk on to where the uploads store keeps files:
- object storage: straight into the bucket as a multipart upload, under the key the
  version's FileField will name (nothing is staged on this host's disk, and memory holds at
  most one part);
- a local folder: a private file under FILE_UPLOAD_TEMP_DIR, which the folder then takes by
  a rename.
Whatever the way out (over the limit, client gone, disk full, store failing, form invalid,
no version made), `discard_leftovers()` leaves no partial file, object or pending upload.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, QueryDict
from django.template.defaultfilters import filesizeformat
from django.utils.datastructures import MultiValueDict

from webapp.core import storage
from webapp.core.limits import LimitExceeded
from webapp.core.multipart import MultipartWriter, ObjectStoreError, is_object_store
from webapp.datasets.models import DatasetVersion, streamed_upload_key
from webapp.datasets.services import (
    is_disk_full,
    out_of_disk_space,
    storage_limit_exceeded,
    storage_unavailable,
)

# Multipart framing and the small form fields are allowed on top of the file itself.
FORM_OVERHEAD_BYTES = 1024 * 1024


class StreamedUpload(UploadedFile):
    """A finished upload on disk; FileSystemStorage moves it instead of copying."""

    def __init__(self, file: IO[bytes], name: str, content_type: str, size: int, sha256: str):
        super().__init__(file, name, content_type, size, None, None)
        self.sha256 = sha256

    def temporary_file_path(self) -> str:
        return self.file.name

    def close(self) -> None:
        try:
            self.file.close()
        except FileNotFoundError:
            pass  # Already moved into storage.


class StoredUpload(UploadedFile):
    """A finished upload already in the uploads store under `stored_key` (object storage).
    Its bytes are not on this host: `chunks()` reads them back from the store."""

    def __init__(self, key: str, name: str, content_type: str, size: int, sha256: str):
        super().__init__(io.BytesIO(), name, content_type, size, None, None)
        self.stored_key, self.sha256 = key, sha256

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        yield from storage.read_chunks(self.stored_key, store=storage.uploads())

    def multiple_chunks(self, chunk_size: int | None = None) -> bool:
        return True

    def read(self, *args: Any) -> bytes:
        raise io.UnsupportedOperation("the upload is in object storage: read it with chunks()")


class _Sink(Protocol):
    def write(self, data: bytes) -> None: ...
    def finish(self, *, name: str, content_type: str, size: int, sha256: str) -> UploadedFile: ...
    def discard(self) -> None: ...


class _DiskSink:
    """Local folder: a private temp file that the uploads folder takes by rename."""

    def __init__(self) -> None:
        os.makedirs(settings.FILE_UPLOAD_TEMP_DIR, exist_ok=True)
        self.file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives until moved or discarded
            suffix=".part", dir=settings.FILE_UPLOAD_TEMP_DIR, delete=False
        )
        self.path = self.file.name

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def finish(self, *, name: str, content_type: str, size: int, sha256: str) -> StreamedUpload:
        self.file.flush()  # a full disk may only say so here
        self.file.seek(0)
        return StreamedUpload(self.file, name, content_type, size, sha256)

    def discard(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # its buffered tail could not be written (disk full): deleted just below
        if os.path.exists(self.path):  # gone when storage moved it
            os.unlink(self.path)


class _BucketSink:
    """Object storage: a multipart upload straight to the key the version will name."""

    def __init__(self, key: str, content_type: str) -> None:
        self.key = key
        self.upload = MultipartWriter(storage.uploads(), key, content_type=content_type)
        self.completed = False

    def write(self, data: bytes) -> None:
        self.upload.write(data)

    def finish(self, *, name: str, content_type: str, size: int, sha256: str) -> StoredUpload:
        self.upload.complete()
        self.completed = True
        return StoredUpload(self.key, name, content_type, size, sha256)

    def discard(self) -> None:
        self.upload.abort()
        # A completed object that no version names (form invalid, refused by the service)
        # is removed; one a version names is the version's file now.
        if self.completed and not DatasetVersion.objects.filter(file=self.key).exists():
            storage.uploads().delete(self.key)
            self.completed = False


class LimitedStreamingUploadHandler(FileUploadHandler):
    """`storage_left`: what the team has left of TEAM_STORAGE_BYTES (None: no limit), so an
    upload over it stops as it streams, not after it has all arrived. `team_id` names the
    folder of the key an upload to object storage streams to."""

    def __init__(
        self,
        request: HttpRequest | None = None,
        *,
        max_bytes: int | None = None,
        storage_left: int | None = None,
        team_id: int | None = None,
    ):
        super().__init__(request)
        self.max_bytes = max_bytes if max_bytes is not None else settings.MAX_UPLOAD_BYTES
        self.storage_left = storage_left
        self.team_id = team_id
        self.error: str | None = None
        # Why, for the APIs: "file_too_large", the storage limit's code, or a server failure's.
        self.error_code = ""
        self.error_status = 413
        self.partial_path: str | None = None  # local folder: the temp file, while it exists
        self.stored_key: str | None = None  # object storage: the key the bytes stream to
        self._sink: _Sink | None = None
        self._hash = hashlib.sha256()
        self._received = 0

    def _refuse(self, size: int) -> bool:
        """Records why `size` bytes are too many (True), or says they fit."""
        if size > self.max_bytes:
            limit = filesizeformat(self.max_bytes)
            self.error = f"The file is larger than the {limit} upload limit."
            self.error_code = "file_too_large"
        elif self.storage_left is not None and size > self.storage_left:
            self._record(storage_limit_exceeded(left=self.storage_left))
        return bool(self.error)

    def _record(self, refusal: LimitExceeded) -> None:
        self.error, self.error_code = " ".join(refusal.messages), refusal.api_code
        self.error_status = refusal.status

    @contextmanager
    def _server_failures(self) -> Iterator[None]:
        """A full disk or a failing store stops the upload with a message that says so."""
        try:
            yield
        except ObjectStoreError:
            self._record(storage_unavailable())
        except OSError as exc:
            if not is_disk_full(exc):
                self._discard()
                raise
            self._record(out_of_disk_space())
        else:
            return
        self._discard()
        # Drain the rest (bounded by the content-length check) so the client gets our answer.
        raise StopUpload(connection_reset=False)

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],
        content_length: int,
        boundary: bytes,
        encoding: str | None = None,
    ) -> tuple[QueryDict, MultiValueDict] | None:
        # A body announced as oversized is refused before any byte is read: an empty
        # parse result short-circuits Django's parser.
        if self._refuse(content_length - FORM_OVERHEAD_BYTES):
            return QueryDict(), MultiValueDict()
        return None

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, file_name, *args, **kwargs)
        if self._sink is not None:
            self.error = "Upload one file at a time."
            self.error_status = 400
            self._discard()
            raise StopUpload(connection_reset=False)
        with self._server_failures():
            if is_object_store(storage.uploads()):
                self.stored_key = streamed_upload_key(team_id=self.team_id, filename=file_name)
                self._sink = _BucketSink(self.stored_key, self.content_type or "")
            else:
                disk = _DiskSink()
                self._sink, self.partial_path = disk, disk.path

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        assert self._sink is not None
        self._received += len(raw_data)
        if self._refuse(self._received):
            self._discard()
            # Drain the rest (bounded by the content-length check) so the client gets our page.
            raise StopUpload(connection_reset=False)
        self._hash.update(raw_data)
        with self._server_failures():
            self._sink.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> UploadedFile | None:
        assert self._sink is not None
        with self._server_failures():
            return self._sink.finish(
                name=self.file_name or "upload",
                content_type=self.content_type or "application/octet-stream",
                size=self._received,
                sha256=self._hash.hexdigest(),
            )
        return None  # not reached: a failure above raises StopUpload

    def upload_interrupted(self) -> None:
        """The body ended before the file did (the client went away)."""
        self._discard()

    def discard_leftovers(self) -> None:
        """Called by the view when done: removes the temp file unless storage moved it, and
        the streamed object unless a version names it."""
        self._discard()

    def _discard(self) -> None:
        if self._sink is not None:
            self._sink.discard()
