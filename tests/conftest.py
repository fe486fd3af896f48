"""Root conftest. pytest-django reads DJANGO_SETTINGS_MODULE from pyproject; tests that do
not ask for the `db` fixture (tests/core) never touch a database.

Every /v1 response any test produces (test client or live server) is checked against
OpenAI's OpenAPI document (tests/api/contract.py): a response that breaks it fails the
test that produced it."""

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Models and tokenizers build into the repo's cache, never a user's home.
os.environ.setdefault("FINETUNE_CORE_CACHE", str(Path(__file__).resolve().parents[1] / ".cache"))

# Processes a test starts (workers, servers) often get their own DATA_DIR, where each would
# generate its own SECRET_KEY; like production hosts, they are given this process's key.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
# Chat answers take the Celery path, in this process and every worker a test starts, whatever
# the broker; the serving path's tests run a serving process and name its wire's URL.
os.environ.setdefault("SERVING_URL", "off")
from django.conf import settings  # noqa: E402 - after the environment it reads

# pytest-django may read the settings before this file runs: then the environment above
# reaches only the processes tests start, and this process is told directly.
if os.environ["SERVING_URL"] == "off":
    settings.SERVING_URL = ""

os.environ.setdefault("SECRET_KEY", settings.SECRET_KEY)

from tests.api import contract  # noqa: E402 - after the settings it needs

RECORDER = "tests.api.contract.Recorder"
# Where a run writes how many responses of each kind it validated (the contract's own test).
REPORT_ENV = "TB_OPENAPI_REPORT"


def pytest_configure(config: pytest.Config) -> None:
    """Outermost middleware, before any handler is built: the live server loads its
    middleware once, when it starts."""
    if RECORDER not in settings.MIDDLEWARE:
        settings.MIDDLEWARE = [RECORDER, *settings.MIDDLEWARE]


@pytest.fixture(autouse=True)
def _openapi_contract() -> Iterator[None]:
    contract.take_records()  # another test's leftovers are not this test's
    contract.RECORDING.set()
    try:
        yield
    finally:
        contract.RECORDING.clear()
    found = []
    for record in contract.take_records():
        problems, seen = contract.violations(record)
        found += problems
        contract.COUNTS.update(seen)
    if found:
        pytest.fail("Responses break OpenAI's OpenAPI document:\n" + "\n".join(found[:20]))


@functools.cache
def _builtin_records() -> list[dict[str, Any]]:
    from workers.catalog import builtin_records

    return builtin_records()


@pytest.fixture(autouse=True)
def _builtin_models(request: pytest.FixtureRequest) -> None:
    """Every test with a database starts with the engine's built-in models registered, as
    `make run` registers them (a transactional test's flush removes them, so per test)."""
    marker = request.node.get_closest_marker("django_db")
    names = set(request.fixturenames)
    if names & {"transactional_db", "live_server"} or (marker and marker.kwargs.get("transaction")):
        request.getfixturevalue("transactional_db")
    elif marker or names & {"db", "django_db_reset_sequences"}:
        request.getfixturevalue("db")
    else:
        return
    from workers.catalog import register_builtins

    register_builtins(_builtin_records())


def pytest_sessionfinish(session: pytest.Session) -> None:
    report = os.environ.get(REPORT_ENV)
    if report:
        Path(report).write_text(json.dumps({k: contract.COUNTS[k] for k in contract.KINDS}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if contract.COUNTS:
        counts = ", ".join(f"{contract.COUNTS[k]} {k}s" for k in contract.KINDS)
        terminalreporter.write_line(f"OpenAI OpenAPI contract: validated {counts}")
