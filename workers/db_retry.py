"""Worker writes that outlive a database restart.

A run's progress writes (and its stop checks and final settle) retry when the database
connection is lost, closing Django's broken connection so the next try opens a new one.
The wait backs off and is bounded by WORKER_DB_RETRY_S, so a database that never returns
ends the write with DatabaseUnreachable, which says so, instead of hanging the run.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

FIRST_WAIT_S = 0.5
LONGEST_WAIT_S = 10.0


class DatabaseUnreachable(Exception):
    """The database did not answer within WORKER_DB_RETRY_S."""


def db_retrying(write: Callable[P, T]) -> Callable[P, T]:
    """`write`, retried with a bounded back-off while the database cannot be reached."""

    @functools.wraps(write)
    def retried(*args: P.args, **kwargs: P.kwargs) -> T:
        waited, wait = 0.0, FIRST_WAIT_S
        while True:
            try:
                return write(*args, **kwargs)
            except (OperationalError, InterfaceError) as exc:
                if connection.in_atomic_block:
                    raise  # only the caller that owns the transaction can run it again
                connection.close()  # Django never reopens a broken connection by itself
                limit = settings.WORKER_DB_RETRY_S
                if waited >= limit:
                    raise DatabaseUnreachable(
                        f"The database did not answer for {waited:.0f} s (WORKER_DB_RETRY_S="
                        f"{limit}) while the worker wrote this run's progress: {exc}"
                    ) from exc
                log.warning(
                    "database unreachable (%s): %s retries in %.1f s (%.0f of %d s waited)",
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                    write.__qualname__,
                    wait,
                    waited,
                    limit,
                )
                time.sleep(wait)
                waited, wait = waited + wait, min(2 * wait, LONGEST_WAIT_S)

    return retried
