"""Per-key rate limits in Django's cache (Redis in production, local memory by default).

A fixed window per bucket: at most API_RATE_LIMIT requests per API_RATE_LIMIT_WINDOW_S for
each authenticated key. Requests whose key is missing or wrong share a small budget per
address (API_RATE_LIMIT_FAILED), so guessing keys is slow, and nobody can spend another
key's budget by sending its public prefix with a wrong secret.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest
from redis import Redis

from webapp.api.auth import authenticate
from webapp.api.errors import ApiError


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    who: str  # whose budget, for the 429's message


def _bucket(request: HttpRequest) -> tuple[str, int, str]:
    """(cache name, limit, whose budget): the authenticated key's, else the address's
    budget for failed keys."""
    try:
        caller = authenticate(request)
    except ApiError:
        address = request.META.get("REMOTE_ADDR", "")
        who = "requests with a missing or wrong API key from this address"
        return f"failed:{address}", settings.API_RATE_LIMIT_FAILED, who
    return f"key:{caller.key.prefix}", settings.API_RATE_LIMIT, "this key"


def rate_limit_check(request: HttpRequest) -> Verdict | None:
    """Count this request; None when limits are off (API_RATE_LIMIT=0)."""
    if settings.API_RATE_LIMIT <= 0:
        return None
    window = settings.API_RATE_LIMIT_WINDOW_S
    name, limit, who = _bucket(request)
    now = time.time()
    slot = int(now // window)
    count = _count(f"tb-rl:{name}:{slot}", window + 1)
    reset_s = max(1, math.ceil((slot + 1) * window - now))
    return Verdict(count <= limit, limit, max(0, limit - count), reset_s, who)


def _redis_writer(cache: RedisCache) -> Redis:
    """The cache's client for writes, made once: Django builds a new Redis() per call,
    which cost more CPU than the round trip. Same connection pool, so nothing changes."""
    backend = cache._cache
    client = _WRITERS.get(backend)
    if client is None:
        client = _WRITERS[backend] = backend.get_client(write=True)
    return client


_WRITERS: weakref.WeakKeyDictionary[Any, Redis] = weakref.WeakKeyDictionary()


def _count(name: str, timeout: int) -> int:
    """Add one to the window's counter and return it: one round trip on Redis."""
    cache = caches["default"]
    if isinstance(cache, RedisCache):
        # add() + incr() would be SET NX, EXISTS, INCR: three round trips. Pipelined: one.
        # No MULTI/EXEC: INCR is atomic by itself, and SET NX only starts the window.
        key = cache.make_and_validate_key(name)
        pipe = _redis_writer(cache).pipeline(transaction=False)
        pipe.set(key, 0, ex=timeout, nx=True)
        pipe.incr(key)
        return int(pipe.execute()[1])
    cache.add(name, 0, timeout=timeout)
    try:
        return cache.incr(name)
    except ValueError:  # evicted between add and incr: start the window again
        cache.set(name, 1, timeout=timeout)
        return 1
