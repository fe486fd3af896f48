"""Browser tests: headless Chromium (Debian's `chromium` package) driven by Playwright.

The web app runs in pytest-django's `live_server` (a threaded server inside this process,
so test settings apply to it), on the file-based SQLite test database that a real Celery
worker process (tests/web/worker_harness.py) opens too.

Without /usr/bin/chromium the tests FAIL with the command that installs it; set
TUNEBOOK_SKIP_BROWSER=1 to skip them instead. Screenshots go to test-artifacts/e2e/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Playwright's sync API keeps an asyncio loop in this thread; Django would refuse ORM calls
# from fixtures here. The live server's own threads have no loop and are unaffected.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from tests.e2e.helpers import TIMEOUT_MS  # noqa: E402
from tests.web.conftest import django_db_modify_db_settings  # noqa: E402, F401 - file SQLite
from tests.web.page_scan import server_path_leaks  # noqa: E402
from tests.web.worker_harness import ROOT, Worker, broker, worker_broker_url  # noqa: E402

CHROMIUM = os.environ.get("TUNEBOOK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "e2e"


def chromium_path() -> str:
    """The browser binary, or a loud failure (a skip only when asked for one)."""
    if os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = (
        f"No Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` "
        "(Debian's package; `playwright install` cannot download browsers here). "
        "Set TUNEBOOK_SKIP_BROWSER=1 to skip the browser tests instead."
    )
    if os.environ.get("TUNEBOOK_SKIP_BROWSER") == "1":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


@pytest.fixture(autouse=True)
def _e2e_settings(settings: Any, tmp_path: Path) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    settings.DATA_DIR = tmp_path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def record_html(pages: list[tuple[str, str]]) -> Callable[[Any], None]:
    """A response listener keeping every HTML page and htmx fragment the browser receives."""

    def on_response(response: Any) -> None:
        if response.headers.get("content-type", "").startswith("text/html"):
            try:
                pages.append((response.url, response.text()))
            except Exception:  # noqa: BLE001 - a redirect or an aborted load has no body
                pass

    return on_response


@pytest.fixture
def new_page(browser: Any, live_server: Any) -> Iterator[Callable[..., Any]]:
    """Pages in fresh browser contexts (one per persona), all closed after the test; every
    HTML page they receive is scanned for server paths at the end (tests/web/page_scan.py)."""
    contexts: list[Any] = []
    pages: list[tuple[str, str]] = []

    def make(**options: Any) -> Any:
        context = browser.new_context(
            base_url=live_server.url, viewport={"width": 1280, "height": 900}, **options
        )
        context.set_default_timeout(TIMEOUT_MS)
        context.on("response", record_html(pages))
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()
    leaks = server_path_leaks(pages)
    assert not leaks, "pages show server paths:\n" + "\n".join(leaks)


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    return new_page()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """shot(page, "03-upload") saves test-artifacts/e2e/<test>/03-upload.png."""
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)

    def save(page: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


@pytest.fixture(autouse=True)
def broker_url(tmp_path: Path) -> Iterator[str]:
    """Every test sends its tasks to a tmp SQLite broker, never the shared one under var/."""
    url = worker_broker_url(tmp_path)
    with broker(url):
        yield url


@pytest.fixture
def worker(
    transactional_db: None, live_server: Any, broker_url: str, tmp_path: Path
) -> Iterator[Worker]:
    """One real Celery worker process on the test's broker and database."""
    w = Worker(
        broker_url=broker_url,
        data_dir=tmp_path,
        media_root=tmp_path / "media",
        log=tmp_path / "worker.log",
    )
    try:
        yield w
    finally:
        w.stop()
