"""Log-in throttling (issue 20, item 9): after too many failures for one account, or from
one address, even the right password is refused until the window ends. Real cache: this
process's memory, and Redis too when the run has one."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
from django.core.cache import caches
from django.test import Client
from django.urls import reverse

from tests.web.conftest import PASSWORD

WINDOW_S = 3
REDIS_URL = next(
    (
        url
        for url in (os.environ.get("CACHE_URL", ""), os.environ.get("CELERY_BROKER_URL", ""))
        if url.startswith("redis://")
    ),
    "",
)
BACKENDS = [
    pytest.param("locmem", id="locmem"),
    pytest.param(
        "redis",
        id="redis",
        marks=pytest.mark.skipif(not REDIS_URL, reason="no Redis in this run"),
    ),
]


@pytest.fixture(params=BACKENDS)
def throttle(request, settings) -> Iterator[None]:
    settings.LOGIN_FAILURE_LIMIT = 3
    settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS = 5
    settings.LOGIN_FAILURE_WINDOW_S = WINDOW_S
    if request.param == "redis":
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": REDIS_URL,
                "KEY_PREFIX": f"test-{uuid.uuid4().hex}",  # never another run's counts
            }
        }
    # This process's memory outlives a test: start and leave it with no counts.
    if request.param == "locmem":
        caches["default"].clear()
    yield
    if request.param == "locmem":
        caches["default"].clear()


def _login(username: str, password: str, address: str = "10.0.0.1"):
    return Client(REMOTE_ADDR=address).post(
        reverse("login"), {"username": username, "password": password}
    )


def _refused_with(response, message: str) -> bool:
    return response.status_code == 200 and message in response.content.decode()


WRONG = "Please enter a correct username and password"
ACCOUNT_LOCKED = "Too many failed log-ins for this account; try again in 3 seconds at the latest."
ADDRESS_LOCKED = "Too many failed log-ins from your address; try again in 3 seconds at the latest."


def test_account_is_locked_after_failures_until_the_window_ends(throttle, owner, editor) -> None:
    started = time.monotonic()  # the window starts during the first failed request
    assert _refused_with(_login("olga", "wrong-password"), WRONG)
    window_ends_by = time.monotonic() + WINDOW_S
    for _ in range(2):
        assert _refused_with(_login("olga", "wrong-password"), WRONG)
    assert _refused_with(_login("olga", PASSWORD), ACCOUNT_LOCKED)
    # The lock is the account's, wherever the next try comes from.
    assert _refused_with(_login("OLGA", PASSWORD, "10.9.9.9"), ACCOUNT_LOCKED)
    assert time.monotonic() - started < WINDOW_S, "too slow to test inside the window"
    # Another account from another address is unaffected.
    assert _login("ed", PASSWORD, "10.0.0.2").status_code == 302
    time.sleep(window_ends_by - time.monotonic() + 0.2)
    assert _login("olga", PASSWORD).status_code == 302


def test_address_is_locked_after_failures_across_accounts(throttle, owner) -> None:
    for name in ("nobody", "someone", "anyone", "olga", "whoever"):
        assert _refused_with(_login(name, "wrong-password", "10.0.0.7"), WRONG)
    assert _refused_with(_login("olga", PASSWORD, "10.0.0.7"), ADDRESS_LOCKED)
    assert _login("olga", PASSWORD, "10.0.0.8").status_code == 302


def test_a_successful_login_forgets_the_accounts_earlier_failures(throttle, owner) -> None:
    for _ in range(2):
        assert _refused_with(_login("olga", "wrong-password"), WRONG)
    assert _login("olga", PASSWORD).status_code == 302
    for _ in range(2):
        assert _refused_with(_login("olga", "wrong-password", "10.0.0.3"), WRONG)
    assert _login("olga", PASSWORD, "10.0.0.3").status_code == 302


def _change_password(user, old: str, new: str, address: str = "10.0.0.1"):
    client = Client(REMOTE_ADDR=address)
    client.force_login(user)
    data = {"old_password": old, "new_password1": new, "new_password2": new}
    return client.post(reverse("password_change"), data)


def test_password_change_is_throttled_with_the_logins(throttle, owner) -> None:
    """A stolen session cannot guess the password at the change form: its old-password
    check counts with the log-ins of the account, and is refused once they are locked."""
    new = "another-horse-battery-7"
    started = time.monotonic()
    assert _refused_with(_change_password(owner, "wrong-1", new), "Your old password was")
    window_ends_by = time.monotonic() + WINDOW_S
    assert _refused_with(_change_password(owner, "wrong-2", new, "10.0.0.4"), "old password")
    assert _refused_with(_login("olga", "wrong-password"), WRONG)
    # Locked: the right old password is refused too, and so is the log-in.
    assert _refused_with(_change_password(owner, PASSWORD, new), ACCOUNT_LOCKED)
    assert _refused_with(_login("olga", PASSWORD, "10.9.9.9"), ACCOUNT_LOCKED)
    assert time.monotonic() - started < WINDOW_S, "too slow to test inside the window"
    owner.refresh_from_db()
    assert owner.check_password(PASSWORD)
    time.sleep(window_ends_by - time.monotonic() + 0.2)
    assert _change_password(owner, PASSWORD, new).status_code == 302
    owner.refresh_from_db()
    assert owner.check_password(new)
