"""Rotating SECRET_KEY: the old key goes to SECRET_KEY_FALLBACKS, and stored judge API keys
and sessions made under it still work; re-encryption then moves the API keys to the new
key, so the fallback can go. And `make run`'s way of serving, with DEBUG off."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse

from tests.web.conftest import client_for
from webapp.evaluations.crypto import KeyUnreadable, decrypt, encrypt
from webapp.evaluations.models import JudgeBackend
from webapp.evaluations.services import judge_backend_create
from webapp.teams.models import Team

ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = "old-" + "o" * 50, "new-" + "n" * 50


def _backend(team: Team, owner: User, api_key: str) -> JudgeBackend:
    return judge_backend_create(
        team=team,
        name="judge",
        base_url="https://api.example.com/v1",
        model="gpt-4o",
        api_key=api_key,
        created_by=owner,
    )


def test_judge_keys_survive_rotation_then_move_to_the_new_key(settings, team, owner) -> None:
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = OLD, []
    backend = _backend(team, owner, "sk-rotate-me")
    stored = backend.api_key_encrypted
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW, [OLD]
    assert decrypt(stored) == "sk-rotate-me"  # read through the fallback
    fresh = encrypt("sk-new")  # new tokens use the new key only
    settings.SECRET_KEY_FALLBACKS = []
    assert decrypt(fresh) == "sk-new"
    with pytest.raises(KeyUnreadable, match="SECRET_KEY_FALLBACKS"):
        decrypt(stored)
    settings.SECRET_KEY_FALLBACKS = [OLD]
    call_command("judge_keys_reencrypt")
    settings.SECRET_KEY_FALLBACKS = []
    moved = JudgeBackend.objects.get(pk=backend.pk).api_key_encrypted
    assert moved != stored and decrypt(moved) == "sk-rotate-me"


def test_a_key_no_configured_key_reads_is_reported_not_lost(settings, team, owner) -> None:
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = OLD, []
    backend = _backend(team, owner, "sk-1")
    settings.SECRET_KEY = NEW
    err = io.StringIO()
    call_command("judge_keys_reencrypt", stderr=err)
    assert f"judge backend {backend.pk}: key unreadable" in err.getvalue()
    settings.SECRET_KEY = OLD
    assert decrypt(JudgeBackend.objects.get(pk=backend.pk).api_key_encrypted) == "sk-1"


def test_sessions_survive_rotation_with_the_fallback(settings, owner) -> None:
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = OLD, []
    kept, dropped = client_for(owner), client_for(owner)
    assert kept.get(reverse("dashboard")).status_code == 200
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW, [OLD]
    assert kept.get(reverse("dashboard")).status_code == 200  # and now signed under NEW
    settings.SECRET_KEY_FALLBACKS = []
    assert kept.get(reverse("dashboard")).status_code == 200
    assert dropped.get(reverse("dashboard")).status_code == 302  # no fallback: log in again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_make_runs_server_has_debug_off_and_serves_static_files(tmp_path: Path) -> None:
    """`manage.py runserver` as `make run` starts it: no DEBUG, no SECRET_KEY given."""
    unset = {"DEBUG", "SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS", "CELERY_BROKER_URL"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="webapp.settings")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                status, css = _get(f"{base}/static/tunebook.css")
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "no server"
                time.sleep(0.3)
        assert status == 200 and css == (ROOT / "webapp/static/tunebook.css").read_text()
        status, page = _get(f"{base}/no/such/page/")
        assert status == 404 and "Django tried" not in page and "URLconf" not in page
    finally:
        server.terminate()
        server.wait(timeout=30)
