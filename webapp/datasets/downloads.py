"""A dataset version's file, downloaded in the browser by any member of its team."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from webapp.core import storage
from webapp.core.downloads import stored_file_response
from webapp.datasets.models import DatasetVersion
from webapp.teams.access import get_for_user


@login_required
@require_GET
def dataset_version_download(request: HttpRequest, version_id: int) -> HttpResponse:
    # Access first (404 for outsiders): only then does the file leave, streamed or redirected.
    version = get_for_user(DatasetVersion.objects.all(), request.user, version_id)
    return stored_file_response(
        version.file.name, store=storage.uploads(), filename=version.original_name
    )
