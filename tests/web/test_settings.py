"""The settings module type-checks its environment and fails at start with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from webapp.env import parse_database_url

ROOT = Path(__file__).resolve().parents[2]


def start_django(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DEBUG"}}
    clean.update(env, DJANGO_SETTINGS_MODULE="webapp.settings")
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG must be a boolean (true/false/1/0), got 'maybe'"),
        ({"MAX_UPLOAD_BYTES": "lots"}, "MAX_UPLOAD_BYTES must be an integer, got 'lots'"),
        ({"MAX_UPLOAD_BYTES": "0"}, "MAX_UPLOAD_BYTES must be >= 1, got 0"),
        ({"DEBUG": "false"}, "SECRET_KEY must be set when DEBUG is false"),
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL must start with sqlite:// or postgres://"),
        ({"DATA_DIR": "relative/dir"}, "DATA_DIR must be an absolute path"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of DEBUG, INFO"),
    ],
)
def test_bad_environment_fails_at_start(env: dict[str, str], message: str) -> None:
    result = start_django(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_good_environment_starts(tmp_path: Path) -> None:
    result = start_django(
        DEBUG="false", SECRET_KEY="s" * 50, DATA_DIR=str(tmp_path), MAX_UPLOAD_BYTES="1_000"
    )
    assert result.returncode == 0, result.stderr


def test_defaults_need_no_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.CELERY_BROKER_URL); print(s.DATABASES['default']['ENGINE'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "webapp.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out == [f"sqla+sqlite:///{tmp_path}/celery-broker.sqlite", "django.db.backends.sqlite3"]


def test_database_url_parsing() -> None:
    pg = parse_database_url("postgres://al%40ice:p%3Ass@db.local:6543/tune?sslmode=require")
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert (pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"], pg["NAME"]) == (
        "al@ice",
        "p:ss",
        "db.local",
        "6543",
        "tune",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"}
    assert parse_database_url("sqlite:////abs/db.sqlite3")["NAME"] == "/abs/db.sqlite3"
    assert parse_database_url("sqlite:///rel.sqlite3")["NAME"] == "rel.sqlite3"


def test_web_process_never_loads_torch_or_finetune_core() -> None:
    code = (
        "import sys, django; django.setup(); from django.urls import get_resolver; "
        "get_resolver().url_patterns; import webapp.datasets.services, webapp.projects.services; "
        "bad = [m for m in ('torch', 'finetune_core') if m in sys.modules]; "
        "sys.exit(f'loaded: {bad}' if bad else 0)"
    )
    result = start_django()
    assert result.returncode == 0
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
