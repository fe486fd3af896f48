"""/v1/files: upload (streamed, size-limited), list, retrieve, content, delete."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from webapp.api.auth import Caller, api_view
from webapp.api.errors import ApiError
from webapp.api.paging import page, parse_ref
from webapp.api.v1.render import file_object
from webapp.api.v1.selectors import file_get, files, team_for_write
from webapp.api.v1.services import api_file_create, api_file_delete
from webapp.core import storage
from webapp.core.downloads import stored_file_response
from webapp.datasets.selectors import team_storage_left
from webapp.datasets.uploads import LimitedStreamingUploadHandler


def _create(request: HttpRequest, caller: Caller) -> HttpResponse:
    # Access is settled before a byte of the body is read; then the body streams to storage.
    team = team_for_write(caller)
    handler = LimitedStreamingUploadHandler(
        request, storage_left=team_storage_left(team=team), team_id=team.pk
    )
    request.upload_handlers = [handler]
    try:
        request.POST  # noqa: B018 - parse now, under the size-limited handler
        if handler.error:
            status, code = handler.error_status, handler.error_code
            raise ApiError(status, handler.error, param="file", code=code)
        upload = request.FILES.get("file")
        if upload is None:
            raise ApiError(400, "Send the file as multipart field 'file'.", param="file")
        purpose = request.POST.get("purpose", "")
        version = api_file_create(team=team, created_by=caller.user, upload=upload, purpose=purpose)
        return JsonResponse(file_object(version))
    finally:
        handler.discard_leftovers()


def _list(request: HttpRequest, caller: Caller) -> HttpResponse:
    purpose = request.GET.get("purpose")
    qs = files(caller)
    if purpose and purpose != "fine-tune":
        qs = qs.none()
    return JsonResponse(page(qs, request, prefix="file-", what="file", render=file_object))


def _get(request: HttpRequest, caller: Caller, file_id: str) -> HttpResponse:
    version = file_get(caller, parse_ref("file-", file_id, what="File object"))
    return JsonResponse(file_object(version))


def _delete(request: HttpRequest, caller: Caller, file_id: str) -> HttpResponse:
    version = file_get(caller, parse_ref("file-", file_id, what="File object"), need="edit")
    api_file_delete(version=version)
    return JsonResponse({"id": file_id, "object": "file", "deleted": True})


def _content(request: HttpRequest, caller: Caller, file_id: str) -> HttpResponse:
    version = file_get(caller, parse_ref("file-", file_id, what="File object"))
    return stored_file_response(
        version.file.name, store=storage.uploads(), filename=version.original_name
    )


files_view = api_view({"GET": _list, "POST": _create})
file_view = api_view({"GET": _get, "DELETE": _delete})
file_content_view = api_view({"GET": _content})
