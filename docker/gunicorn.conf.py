"""gunicorn's settings for Tunebook's web process: the web image runs

    gunicorn -c docker/gunicorn.conf.py

gthread workers: WEB_WORKERS processes (default: the CPUs this process may use, 2 to 8),
each serving WEB_THREADS requests at once (default 4), on 0.0.0.0:WEB_PORT (default 8000).
A worker may take as long as an API request may run (API_REQUEST_TIME_LIMIT_S, read by the
settings module). docker/healthcheck.py reads this file for the port.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from webapp import settings as tunebook
from webapp.env import env_int

wsgi_app = "webapp.wsgi"
worker_class = "gthread"
workers = env_int("WEB_WORKERS", min(8, max(2, len(os.sched_getaffinity(0)))), minimum=1)
threads = env_int("WEB_THREADS", 4, minimum=1)
web_port = env_int("WEB_PORT", 8000, minimum=1)  # not a gunicorn name: for the healthcheck
bind = [f"0.0.0.0:{web_port}"]
timeout = tunebook.API_REQUEST_TIME_LIMIT_S
graceful_timeout = 30
# Worker heartbeat files on tmpfs: a container's overlay disk can stall them into timeouts.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = "-"
errorlog = "-"
# gunicorn 27's admin socket defaults to one path per user ($HOME/.gunicorn): unused here,
# and two servers on one host would contend for it.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Several workers share /metrics' request latencies through prometheus_client's
    multiprocess folder (webapp/ops/metrics.py): one of this run's own unless the operator
    named one, which starts empty (files of a previous run would count twice)."""
    if server.cfg.workers < 2 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="tb-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # before any worker forks
    Path(folder).mkdir(parents=True, exist_ok=True)
    for stale in Path(folder).glob("*.db"):
        stale.unlink()
