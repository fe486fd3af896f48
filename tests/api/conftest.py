"""API tests: the web personas, a live server, the real `openai` SDK, a real Celery worker.

Every /v1 response these tests produce is checked against OpenAI's OpenAPI document
(tests/api/contract.py): a response that breaks it fails the test that produced it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from openai import OpenAI

from tests.api import contract
from tests.web import conftest as web
from tests.web.worker_harness import Worker, broker, worker_broker_url
from webapp.api.keys import api_key_create
from webapp.teams.models import Team
from webapp.teams.services import team_create

# The web tests' personas and settings, shared.
_web_settings = web._web_settings
django_db_modify_db_settings = web.django_db_modify_db_settings
owner, editor, viewer, outsider, team = web.owner, web.editor, web.viewer, web.outsider, web.team
dataset_version, project, cells, cell_run = (
    web.dataset_version,
    web.project,
    web.cells,
    web.cell_run,
)


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


def pytest_sessionfinish(session: pytest.Session) -> None:
    report = os.environ.get(REPORT_ENV)
    if report:
        Path(report).write_text(json.dumps({k: contract.COUNTS[k] for k in contract.KINDS}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if contract.COUNTS:
        counts = ", ".join(f"{contract.COUNTS[k]} {k}s" for k in contract.KINDS)
        terminalreporter.write_line(f"OpenAI OpenAPI contract: validated {counts}")


@pytest.fixture(autouse=True)
def _private_broker(tmp_path: Path) -> Iterator[str]:
    """Tasks go to the test broker (tmp_path's SQLite, or Redis database 15 in the Redis
    run), never the developer's var/ queue."""
    url = worker_broker_url(tmp_path)
    with broker(url):
        yield url


@pytest.fixture
def sdk(live_server) -> Callable[[str], OpenAI]:
    def make(key: str) -> OpenAI:
        # Chat waits its turn on the one test worker, behind post-training tasks: be patient.
        return OpenAI(base_url=f"{live_server.url}/v1", api_key=key, max_retries=0, timeout=180)

    return make


@pytest.fixture
def owner_key(team: Team, owner) -> str:
    return api_key_create(team=team, created_by=owner, name="ci")[1]


@pytest.fixture
def other_team(outsider) -> Team:
    return team_create(name="Rivals", owner=outsider)


@pytest.fixture
def start_worker(
    transactional_db: None, tmp_path: Path, _private_broker: str
) -> Iterator[Callable[[], Worker]]:
    started: list[Worker] = []

    def start() -> Worker:
        worker = Worker(
            broker_url=_private_broker,
            data_dir=tmp_path,
            media_root=tmp_path / "media",
            log=tmp_path / "worker.log",
        )
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
