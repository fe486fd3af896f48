"""The web image's HEALTHCHECK: GET /healthz from this container's gunicorn with the standard
library alone (slim images have no curl); exit 0 on a 200, else 1 saying what came back.

The request names a host the settings allow (ALLOWED_HOSTS' first), since Django answers
400 to any other; the port is gunicorn's, from docker/gunicorn.conf.py.
"""

from __future__ import annotations

import http.client
import runpy
import sys
from pathlib import Path

TIMEOUT_S = 5.0


def allowed_host(allowed: list[str]) -> str:
    """A Host header Django accepts: "*" allows any, ".example.com" its bare domain too."""
    for pattern in allowed:
        if pattern != "*":
            return pattern.lstrip(".")
    return "localhost"


def main() -> int:
    config = runpy.run_path(str(Path(__file__).with_name("gunicorn.conf.py")))
    host = allowed_host(config["tunebook"].ALLOWED_HOSTS)
    conn = http.client.HTTPConnection("127.0.0.1", config["web_port"], timeout=TIMEOUT_S)
    try:
        conn.request("GET", "/healthz", headers={"Host": host})
        status = conn.getresponse().status
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if status != 200:
        print(f"unhealthy: /healthz answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
