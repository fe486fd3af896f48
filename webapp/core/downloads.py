"""A stored file as an HTTP download: streamed out of whichever store holds it (the web host
never holds or stages the whole file: django-storages' S3File would read all of it), or, where
STORAGE_URL says `downloads=redirect` and the store can presign (S3), a 302 to a short-lived
presigned GET URL so the bytes go from the store to the client without passing the web.

Callers check access first: a response from here is the permission to read the file."""

from __future__ import annotations

from django.core.files.storage import Storage
from django.http import HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.utils.http import content_disposition_header

from webapp.core import storage

CHUNK = 256 * 1024


def stored_file_response(
    key: str, *, store: Storage, filename: str, content_type: str = "application/octet-stream"
) -> HttpResponse | StreamingHttpResponse:
    """The one place that decides how a download leaves: redirect or stream."""
    if getattr(store, "downloads", "stream") == "redirect":
        url = store.download_url(key, filename=filename, content_type=content_type)  # type: ignore[attr-defined]
        response: HttpResponse | StreamingHttpResponse = HttpResponseRedirect(url)
        # The URL grants access for a while: no shared cache keeps it, no browser reuses it.
        response["Cache-Control"] = "private, no-store"
        return response
    response = StreamingHttpResponse(
        storage.read_chunks(key, store=store, size=CHUNK), content_type=content_type
    )
    response["Content-Length"] = str(store.size(key))
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response
