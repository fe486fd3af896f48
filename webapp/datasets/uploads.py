"""Streaming upload handler that enforces MAX_UPLOAD_BYTES while the body arrives.

Django's default handlers buffer to memory or a temp file with no size cap. This one
writes each chunk straight to a private file under FILE_UPLOAD_TEMP_DIR, hashes it on the
way, and aborts (deleting the partial file) as soon as the limit is crossed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import IO, Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, QueryDict
from django.template.defaultfilters import filesizeformat
from django.utils.datastructures import MultiValueDict

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


class LimitedStreamingUploadHandler(FileUploadHandler):
    def __init__(self, request: HttpRequest | None = None, *, max_bytes: int | None = None):
        super().__init__(request)
        self.max_bytes = max_bytes if max_bytes is not None else settings.MAX_UPLOAD_BYTES
        self.error: str | None = None
        self.partial_path: str | None = None
        self._file: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._received = 0

    def _too_large(self) -> str:
        return f"The file is larger than the {filesizeformat(self.max_bytes)} upload limit."

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
        if content_length > self.max_bytes + FORM_OVERHEAD_BYTES:
            self.error = self._too_large()
            return QueryDict(), MultiValueDict()
        return None

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, file_name, *args, **kwargs)
        if self._file is not None:
            self.error = "Upload one file at a time."
            self._discard()
            raise StopUpload(connection_reset=False)
        os.makedirs(settings.FILE_UPLOAD_TEMP_DIR, exist_ok=True)
        self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives until moved or discarded
            suffix=".part", dir=settings.FILE_UPLOAD_TEMP_DIR, delete=False
        )
        self.partial_path = self._file.name

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        assert self._file is not None
        self._received += len(raw_data)
        if self._received > self.max_bytes:
            self.error = self._too_large()
            self._discard()
            # Drain the rest (bounded by the content-length check) so the client gets our page.
            raise StopUpload(connection_reset=False)
        self._file.write(raw_data)
        self._hash.update(raw_data)
        return None

    def file_complete(self, file_size: int) -> StreamedUpload | None:
        assert self._file is not None
        self._file.flush()
        self._file.seek(0)
        return StreamedUpload(
            self._file,
            name=self.file_name or "upload",
            content_type=self.content_type or "application/octet-stream",
            size=self._received,
            sha256=self._hash.hexdigest(),
        )

    def upload_interrupted(self) -> None:
        self._discard()

    def discard_leftovers(self) -> None:
        """Called by the view when done: removes the file unless storage already moved it."""
        self._discard()

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
        if self.partial_path and os.path.exists(self.partial_path):
            os.unlink(self.partial_path)
