"""Readiness checks: can this web process reach what a request needs?

Each check returns None when its dependency answers, else a short reason that names no
host, path or credential (the body is public to load balancers); the details are logged.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from django.core.files.base import ContentFile
from django.db import connection

from webapp.core import storage
from webapp.jobs import queue

log = logging.getLogger(__name__)

# A probe must answer quickly: a broker that does not answer within this is "down".
BROKER_TIMEOUT_S = 2.0


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker() -> None:
    with queue.app.connection_for_write(connect_timeout=BROKER_TIMEOUT_S) as conn:
        conn.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0.1, timeout=BROKER_TIMEOUT_S
        )


def check_storage() -> None:
    """Write and delete a file in each store: uploads and artifacts (folders or a bucket)."""
    for store in (storage.uploads(), storage.artifacts()):
        name = store.save(f"readyz/{uuid.uuid4().hex}", ContentFile(b"ok"))
        store.delete(name)


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "broker": check_broker,
    "storage": check_storage,
}


def readiness() -> dict[str, str]:
    """{check name: "ok" or "unavailable (<exception class>)"} for every check."""
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            log.warning("readiness check %s failed: %s", name, exc, exc_info=True)
            results[name] = f"unavailable ({type(exc).__name__})"
        else:
            results[name] = "ok"
    return results
