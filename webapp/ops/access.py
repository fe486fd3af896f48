"""Who may read /metrics: operators, never the teams the service hosts.

With METRICS_TOKEN set, a scrape must send `Authorization: Bearer <token>`; without it,
only this machine may scrape (a Prometheus beside the web process, or an SSH tunnel).
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest

LOCAL_ADDRESSES = frozenset({"127.0.0.1", "::1"})


def metrics_refusal(request: HttpRequest) -> tuple[int, str] | None:
    """None when the request may read the metrics, else (status, reason)."""
    token = settings.METRICS_TOKEN
    if not token:
        if request.META.get("REMOTE_ADDR") in LOCAL_ADDRESSES:
            return None
        return 403, "Metrics are served to localhost only; set METRICS_TOKEN to scrape remotely."
    sent = request.headers.get("Authorization", "")
    scheme, _, value = sent.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token):
        return None
    return 401, "Metrics need the header 'Authorization: Bearer <METRICS_TOKEN>'."
