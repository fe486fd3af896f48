"""The settings module type-checks its environment and fails at start with a clear message."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from webapp.env import parse_database_url

ROOT = Path(__file__).resolve().parents[2]
# Left out of a child's environment unless a test sets them.
UNSET = {"DATABASE_URL", "DEBUG", "SECRET_KEY", "SECRET_KEY_FALLBACKS", "ALLOWED_HOSTS"}
PUBLIC_DEV_KEY = "dev-only-insecure-secret-key-change-me"  # in git history, so refused


def child_env(**env: str) -> dict[str, str]:
    """This environment less UNSET, plus `env`: what a started process reads."""
    clean = {k: v for k, v in os.environ.items() if k not in UNSET}
    return {**clean, **env, "DJANGO_SETTINGS_MODULE": "webapp.settings"}


def start_django(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=child_env(**env),
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
        ({"DEBUG": "false", "SECRET_KEY": PUBLIC_DEV_KEY}, "SECRET_KEY is the public development"),
        ({"SECRET_KEY": PUBLIC_DEV_KEY}, "secrets.token_urlsafe(50)"),
        ({"SECURE_COOKIES": "sometimes"}, "SECURE_COOKIES must be a boolean"),
        ({"DATABASE_URL": "mysql://db/x"}, "DATABASE_URL must start with sqlite:// or postgres://"),
        ({"DATA_DIR": "relative/dir"}, "DATA_DIR must be an absolute path"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of DEBUG, INFO"),
        (
            {"JOB_STALE_AFTER_S": "60", "WORKER_DB_RETRY_S": "60"},
            "WORKER_DB_RETRY_S (60) must be smaller than JOB_STALE_AFTER_S (60)",
        ),
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
    # A short stale limit alone is enough: the database retry follows it (half of it).
    assert start_django(DATA_DIR=str(tmp_path), JOB_STALE_AFTER_S="8").returncode == 0


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


def test_web_process_loads_only_the_engine_contracts() -> None:
    """No torch, no workers, and of finetune_core only its torch-free contracts."""
    allowed = ("finetune_core", "finetune_core.errors", "finetune_core.contracts")
    # Exact names, or a module inside the contracts package.
    code = (
        "import sys, django; django.setup(); from django.urls import get_resolver; "
        "get_resolver().url_patterns; import webapp.datasets.services, webapp.projects.services; "
        "import webapp.api.v1.services, webapp.projects.cell_kinds; "
        f"engine = [m for m in sys.modules if m.split('.')[0] == 'finetune_core']; "
        f"bad = [m for m in engine if m not in {allowed!r} "
        "and not m.startswith('finetune_core.contracts.')]; "
        "bad += [m for m in ('torch', 'transformers', 'workers') if m in sys.modules]; "
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


def settings_of(*names: str, **env: str) -> dict[str, object]:
    """Settings as a fresh process reads them from `env` (and nothing else we set)."""
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {names!r}}}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_debug_is_off_and_cookies_fit_the_hosts_unless_switched(tmp_path: Path) -> None:
    names = ("DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE")
    data = str(tmp_path)
    # The embedded default answers only on this machine, over plain http.
    assert settings_of(*names, DATA_DIR=data) == dict.fromkeys(names, False)
    public = settings_of(*names, DATA_DIR=data, ALLOWED_HOSTS="tunebook.example.com")
    assert public == {"DEBUG": False, "SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True}
    assert settings_of("DEBUG", DATA_DIR=data, DEBUG="true") == {"DEBUG": True}


def test_without_secret_key_one_is_generated_once_per_data_dir(tmp_path: Path) -> None:
    first = settings_of("SECRET_KEY", DATA_DIR=str(tmp_path / "a"))["SECRET_KEY"]
    key_file = tmp_path / "a" / "secret_key"
    assert key_file.read_text().strip() == first and len(str(first)) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert settings_of("SECRET_KEY", DATA_DIR=str(tmp_path / "a"))["SECRET_KEY"] == first
    assert settings_of("SECRET_KEY", DATA_DIR=str(tmp_path / "b"))["SECRET_KEY"] != first
    assert list((tmp_path / "a").glob(".secret_key.*")) == []  # no temporary file left
    # A key in the environment wins, and nothing is written.
    given = settings_of("SECRET_KEY", DATA_DIR=str(tmp_path / "c"), SECRET_KEY="k" * 50)
    assert given == {"SECRET_KEY": "k" * 50} and not (tmp_path / "c" / "secret_key").exists()


def test_processes_starting_together_agree_on_one_generated_key(tmp_path: Path) -> None:
    code = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
    env = child_env(DATA_DIR=str(tmp_path))
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    keys = {p.communicate(timeout=120)[0].strip() for p in starts}
    assert keys == {(tmp_path / "secret_key").read_text().strip()}
