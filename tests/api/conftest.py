"""API tests: the web personas, a live server, the real `openai` SDK, a real Celery worker.

Every /v1 response these tests (and the web and browser tests) produce is checked against
OpenAI's OpenAPI document by the root conftest (tests/api/contract.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from openai import OpenAI

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

    def start(**environ: str) -> Worker:
        worker = Worker(
            broker_url=_private_broker,
            data_dir=tmp_path,
            media_root=tmp_path / "media",
            log=tmp_path / "worker.log",
            **environ,
        )
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
