"""Every HTML page the web tests render, scanned for server paths (a user must never see one).

`RecordPages` is added to MIDDLEWARE for each web test by tests/web/conftest.py (the browser
tests record what Chromium receives instead: tests/e2e/conftest.py); at the end of the test,
`server_path_leaks` lists each page that shows the repository root, the data folder or a
/tmp/ path.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

PAGES: list[tuple[str, str]] = []


class RecordPages:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        html = response.get("Content-Type", "").startswith("text/html")
        # The admin is the operators' (staff only): it shows where a registered model lies.
        operators = request.path.startswith("/admin/")
        if html and not operators and not getattr(response, "streaming", False):
            PAGES.append((request.get_full_path(), response.content.decode(errors="replace")))
        return response


def forbidden() -> list[str]:
    return sorted({str(settings.BASE_DIR), str(settings.DATA_DIR), "/tmp/"}, key=len, reverse=True)


def server_path_leaks(pages: list[tuple[str, str]] | None = None) -> list[str]:
    """`page: ...context...` for each recorded page that shows a server path."""
    leaks = []
    for url, body in PAGES if pages is None else pages:
        for needle in forbidden():
            if (at := body.find(needle)) >= 0:
                leaks.append(f"{url}: …{body[max(0, at - 60) : at + 80]}…")
                break
    return leaks
