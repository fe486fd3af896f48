"""`make run`'s workers: one solo Celery worker per lane of webapp.jobs.queue.LANES, so
a validation a person waits on never queues behind a long model job, and, while the
serving path is on (SERVING_URL: by default the SQLite wire beside the SQLite broker),
the serving process `python -m workers.serve`, so a chat never waits for a fine-tune.

    python -m workers.embedded [--beat SCHEDULE_FILE] [celery worker options...]

Options after the lane's own (-Q, -c 1, --pool=solo, -n) go to every worker; --beat runs
the periodic stale-job recovery in the first lane's worker. Each worker is named after
its lane (`default@host`, `gpu-background@host`); `-n NAME` prefixes that name. The
processes stop together: SIGTERM or SIGINT here is passed on, and when one exits the
others are stopped.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from webapp.jobs.queue import LANES

POLL_S = 0.5


def worker_command(lane: tuple[str, ...], *, name: str, extra: list[str]) -> list[str]:
    prefix = f"{name.split('@')[0]}-" if name else ""
    host = name.split("@")[1] if "@" in name else "%h"
    node = f"{prefix}{'-'.join(lane)}@{host}"
    queues = ",".join(lane)
    base = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queues]
    return [*base, "-c", "1", "--pool=solo", "-n", node, *extra]


def serve_command() -> list[str] | None:
    """The serving process's command, or None with the serving path off."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    from django.conf import settings

    return [sys.executable, "-m", "workers.serve"] if settings.SERVING_URL else None


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m workers.embedded", description=__doc__, allow_abbrev=False
    )
    parser.add_argument("--beat", metavar="SCHEDULE_FILE", help="run celery beat too")
    parser.add_argument("-n", "--hostname", default="", help="prefix of each worker's name")
    return parser.parse_known_args(argv)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str]) -> int:
    args, extra = _parse(argv)
    procs: list[subprocess.Popen[bytes]] = []
    for index, lane in enumerate(LANES):
        beat = ["-B", "-s", args.beat] if args.beat and index == 0 else []
        procs.append(
            subprocess.Popen(worker_command(lane, name=args.hostname, extra=[*beat, *extra]))
        )
    serve = serve_command()
    if serve:
        procs.append(subprocess.Popen(serve))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _stop(procs)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while all(proc.poll() is None for proc in procs):
        time.sleep(POLL_S)
    _stop(procs)
    return max(proc.returncode or 0 for proc in procs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
