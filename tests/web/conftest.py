"""Personas and helpers for web tests. Real database, no mocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.test import Client

from tests.web import page_scan
from tests.web.own_servers import own_postgres, own_redis  # noqa: F401 - fixtures
from webapp.accounts.services import user_signup
from webapp.datasets.models import DatasetVersion
from webapp.datasets.services import dataset_version_create
from webapp.projects.models import Cell, CellRun, Project
from webapp.projects.services import cell_create, cell_run_create, project_create
from webapp.teams.models import Membership, Role, Team
from webapp.teams.services import team_create

PASSWORD = "correct-horse-battery-9"


@pytest.fixture(autouse=True)
def _web_settings(settings, tmp_path: Path) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    settings.DATA_DIR = tmp_path
    # Counters kept in the cache (API rate limits: failed keys count per address, and every
    # test calls from 127.0.0.1) start afresh in each test. Only this process's own memory
    # is cleared: a Redis cache may share its database with others.
    if isinstance(caches["default"], LocMemCache):
        caches["default"].clear()


@pytest.fixture(autouse=True)
def _no_server_paths_on_pages(settings) -> Iterator[None]:
    """Fails any web test whose pages show a server path (see tests/web/page_scan.py)."""
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.web.page_scan.RecordPages"]
    page_scan.PAGES.clear()
    yield
    leaks = page_scan.server_path_leaks()
    page_scan.PAGES.clear()
    assert not leaks, "pages show server paths:\n" + "\n".join(leaks)


def make_user(username: str) -> User:
    return user_signup(username=username, password=PASSWORD, email=f"{username}@example.com")


@pytest.fixture
def owner(db) -> User:
    return make_user("olga")


@pytest.fixture
def editor(db) -> User:
    return make_user("ed")


@pytest.fixture
def viewer(db) -> User:
    return make_user("vic")


@pytest.fixture
def outsider(db) -> User:
    return make_user("oscar")


@pytest.fixture
def team(owner: User, editor: User, viewer: User) -> Team:
    team = team_create(name="Lab", owner=owner)
    Membership.objects.create(team=team, user=editor, role=Role.EDITOR)
    Membership.objects.create(team=team, user=viewer, role=Role.VIEWER)
    return team


@pytest.fixture
def personas(owner: User, editor: User, viewer: User, outsider: User) -> dict[str, User]:
    return {"owner": owner, "editor": editor, "viewer": viewer, "outsider": outsider}


def client_for(user: User | None, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    if user is not None:
        client.force_login(user)
    return client


class Upload:
    """A real in-memory upload, as Django's test client would build it."""

    @staticmethod
    def make(name: str, content: bytes):
        from django.core.files.uploadedfile import SimpleUploadedFile

        return SimpleUploadedFile(name, content, content_type="application/octet-stream")


CHAT_JSONL = (
    b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}\n'
    b'{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}\n'
)


@pytest.fixture
def dataset_version(team: Team, owner: User) -> DatasetVersion:
    return dataset_version_create(
        team=team, name="greetings", upload=Upload.make("chat.jsonl", CHAT_JSONL), created_by=owner
    )


@pytest.fixture
def project(team: Team, owner: User) -> Project:
    return project_create(team=team, name="First notebook", created_by=owner)


@pytest.fixture
def cells(project: Project, owner: User, dataset_version: DatasetVersion) -> dict[str, Cell]:
    md = cell_create(project=project, kind="markdown", config={"text": "# Hi"}, created_by=owner)
    ds = cell_create(
        project=project,
        kind="dataset",
        config={"dataset": dataset_version.dataset_id},
        created_by=owner,
    )
    ft = cell_create(
        project=project,
        kind="finetune",
        config={
            "dataset_cell": ds.pk,
            "base_model": "tiny-llama",
            "epochs": 1,
            "learning_rate": 0.001,
            "lora_r": 8,
            "max_length": 128,
        },
        created_by=owner,
    )
    return {"markdown": md, "dataset": ds, "finetune": ft}


@pytest.fixture
def cell_run(cells: dict[str, Cell], owner: User) -> CellRun:
    return cell_run_create(cell=cells["finetune"], created_by=owner)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A file-based SQLite test database, so a Celery worker process can open it too."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        db.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")
