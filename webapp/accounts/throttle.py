"""Log-in throttling in Django's cache (Redis when CACHE_URL is set, so every web process
shares the counts; else this process's memory).

Failed log-ins are counted per account and per client address. The count's window starts
at the first failure; once a count reaches its limit, log-ins for that account, or from
that address, are refused without looking at the password until the window ends.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest


@dataclass(frozen=True)
class Counter:
    key: str
    limit: int
    refusal: str


def _window_text() -> str:
    seconds = settings.LOGIN_FAILURE_WINDOW_S
    if seconds % 60 == 0:
        minutes = seconds // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def _counters(username: str, request: HttpRequest | None) -> list[Counter]:
    # Hashed: any username fits a cache key, and unknown names count like real ones.
    account = hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]
    address = request.META.get("REMOTE_ADDR", "") if request is not None else ""
    later = f"try again in {_window_text()} at the latest."
    return [
        Counter(
            f"tb-login:account:{account}",
            settings.LOGIN_FAILURE_LIMIT,
            f"Too many failed log-ins for this account; {later}",
        ),
        Counter(
            f"tb-login:address:{address}",
            settings.LOGIN_FAILURE_LIMIT_PER_ADDRESS,
            f"Too many failed log-ins from your address; {later}",
        ),
    ]


def login_refusal(*, username: str, request: HttpRequest | None) -> str | None:
    """Why a log-in must be refused before its password is checked, or None."""
    counters = _counters(username, request)
    counts = caches["default"].get_many([c.key for c in counters])
    for counter in counters:
        if counts.get(counter.key, 0) >= counter.limit:
            return counter.refusal
    return None


def login_failure_record(*, username: str, request: HttpRequest | None) -> None:
    cache = caches["default"]
    window = settings.LOGIN_FAILURE_WINDOW_S
    for counter in _counters(username, request):
        cache.add(counter.key, 0, timeout=window)
        try:
            cache.incr(counter.key)
        except ValueError:  # expired between add and incr: this failure starts a new window
            cache.set(counter.key, 1, timeout=window)


def login_success_record(*, username: str, request: HttpRequest | None) -> None:
    """The account's owner got in: their earlier typos no longer count against them."""
    caches["default"].delete(_counters(username, request)[0].key)
