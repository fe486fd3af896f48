"""make bench-api: latency and throughput of the /v1/ API under a fixed request rate.

Production-like: gunicorn (gthread workers, DEBUG=false) on PostgreSQL, rate-limit
counters in Redis (limits on, set high enough not to trigger), in a fresh database
seeded through the services (a team, a key, --jobs fine-tuning jobs, a third of them
succeeded so /v1/models lists fine-tuned models and checkpoints). The load comes
from other processes on loopback: an open-loop generator that sends --rate requests/s
on a fixed schedule, whatever the answers' pace, and measures each latency from the
request's scheduled time (so a server that falls behind is charged for the queue).
wrk is closed-loop and wrk2 is not packaged, hence this small generator.

Prints a table (p50/p90/p99/max, achieved rate, errors, server CPU and SQL queries per
request) per endpoint, the load average before and after (the machine is shared), and
one JSON line.

    python -m benchmarks.bench_api [--rate 200] [--duration 20] [--jobs 30]
        [--workers 3 --threads 4] [--pg postgres://postgres@127.0.0.1:5432/test]
        [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ("/v1/models", "/v1/fine_tuning/jobs")
BENCH_DB = "tunebook_bench_api"
TARGET_P99_MS = 50.0
ROW = b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}\n'


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- set-up: database, seed, server -----------------------------------------------------


def _db_url(pg: str, name: str) -> str:
    parts = urlsplit(pg)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def fresh_database(pg: str) -> str:
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    return _db_url(pg, BENCH_DB)


def drop_database(pg: str) -> None:
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def seed(jobs: int) -> str:
    """Runs in a child process with the bench environment; prints the API key."""
    import django

    django.setup()
    from django.core.files.uploadedfile import SimpleUploadedFile

    from webapp.accounts.services import user_signup
    from webapp.api.keys import api_key_create
    from webapp.api.v1.services import fine_tuning_job_create
    from webapp.datasets.models import VersionStatus
    from webapp.datasets.services import dataset_version_create, dataset_version_mark
    from webapp.jobs.services import job_start, job_succeed
    from webapp.teams.services import team_create

    user = user_signup(username="bench", password="bench-password-9", email="b@example.com")
    team = team_create(name="Bench", owner=user)
    upload = SimpleUploadedFile("train.jsonl", ROW * 20)
    version = dataset_version_create(team=team, name="train", upload=upload, created_by=user)
    dataset_version_mark(version_id=version.pk, status=VersionStatus.VALID)
    version.refresh_from_db()
    for i in range(jobs):
        ft = fine_tuning_job_create(
            team=team, created_by=user, model="smollm2-135m-instruct", training_file=version,
            suffix=f"run{i}", seed=i, metadata={"i": str(i)}, hyperparameters={}, extras={},
        )  # fmt: skip
        if i % 3 == 0:  # a third finished: fine-tuned models in /v1/models
            job_start(job_id=ft.job_id, celery_task_id=f"bench-{i}")
            job_succeed(job_id=ft.job_id, result={"steps": 10})
    return api_key_create(team=team, created_by=user, name="bench")[1]


def count_queries(key: str) -> dict[str, int]:
    """SQL queries per request of each endpoint (after the key's last-use touch)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(SERVER_NAME="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {key}")
    counts = {}
    for path in ENDPOINTS:
        client.get(path)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(path).status_code == 200
        counts[path] = len(queries)
    return counts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, key: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        try:
            status = one_request(http.client.HTTPConnection("127.0.0.1", port), "/v1/models", key)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"gunicorn did not answer:\n{log.read_text()[-3000:]}")


def server_cpu_s(master: int) -> float:
    """User + system CPU seconds of gunicorn's workers so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return float("nan")
    total = 0
    for pid in children:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


# --- load: open-loop, fixed schedule ----------------------------------------------------


def one_request(conn: http.client.HTTPConnection, path: str, key: str) -> int:
    conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
    response = conn.getresponse()
    response.read()
    return response.status


def load_process(
    port: int, path: str, key: str, rate: float, start: float, duration: float, threads: int,
    out: mp.Queue,
) -> None:  # fmt: skip
    """Sends `rate` requests/s from `start` for `duration` s; puts (latencies, errors)."""
    todo: queue.Queue[float | None] = queue.Queue()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while (scheduled := todo.get()) is not None:
            try:
                status = one_request(conn, path, key)
                problem = None if status == 200 else f"HTTP {status}"
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                problem = type(exc).__name__
            done = time.time()
            with lock:
                latencies.append(done - scheduled)
                if problem:
                    errors.append(problem)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    n = int(rate * duration)
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.time()
        if delay > 0:
            time.sleep(delay)
        todo.put(scheduled)
    for _ in pool:
        todo.put(None)
    for t in pool:
        t.join()
    out.put((latencies, errors))


def run_load(
    port: int, path: str, key: str, *, rate: float, duration: float, procs: int, threads: int
) -> dict[str, Any]:
    out: mp.Queue = mp.Queue()
    start = time.time() + 0.5
    # Each process takes every procs-th slot of the schedule: the sum is exactly `rate`.
    children = [
        mp.Process(
            target=load_process,
            args=(port, path, key, rate / procs, start + k / rate, duration, threads, out),
        )
        for k in range(procs)
    ]
    for child in children:
        child.start()
    latencies: list[float] = []
    errors: list[str] = []
    for _ in children:
        lat, err = out.get()
        latencies += lat
        errors += err
    for child in children:
        child.join()
    elapsed = time.time() - start
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return {
        "endpoint": path,
        "target_rps": rate,
        "achieved_rps": round(len(latencies) / elapsed, 1),
        "requests": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "p50_ms": round(pct(50), 2),
        "p90_ms": round(pct(90), 2),
        "p99_ms": round(pct(99), 2),
        "max_ms": round(1000 * latencies[-1], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    ap.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    ap.add_argument("--load-procs", type=int, default=2, help="load generator processes")
    ap.add_argument(
        "--pg", default=os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/test")
    )
    ap.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--seed-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.seed_only:
        key = seed(args.jobs)
        print(json.dumps(count_queries(key)))
        print(key)
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DEBUG": "false",
        "SECRET_KEY": "bench-api-secret-key-not-for-production-0123456789",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": fresh_database(args.pg),
        "CACHE_URL": args.redis,
        # Limits stay on (their cost is measured) but high enough never to trigger.
        "API_RATE_LIMIT": "100000000",
        # Seeding enqueues jobs: a private broker file, never a shared Redis queue.
        "CELERY_BROKER_URL": f"sqla+sqlite:///{tmp / 'broker.sqlite'}",
        "DATA_DIR": str(tmp),
        "LOG_LEVEL": "WARNING",
    }
    server: subprocess.Popen | None = None
    try:
        say("migrating and seeding the bench database ...")
        py = sys.executable
        subprocess.run(
            [py, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
        )
        subprocess.run([py, "-m", "workers.catalog"], cwd=ROOT, env=env, check=True)
        seeded = subprocess.run(
            [py, "-m", "benchmarks.bench_api", "--seed-only", "--jobs", str(args.jobs)],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()  # fmt: skip
        queries, key = json.loads(seeded[-2]), seeded[-1]
        port = free_port()
        log = tmp / "gunicorn.log"
        cmd = [
            py, "-m", "gunicorn", "webapp.wsgi", "-b", f"127.0.0.1:{port}",
            "-k", "gthread", "-w", str(args.workers), "--threads", str(args.threads),
            "--timeout", "600", "--log-level", "warning",
        ]  # fmt: skip
        server = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
        )
        wait_up(port, key, server, log)
        load_before = os.getloadavg()
        rows = []
        for path in ENDPOINTS:
            say(
                f"{path}: {args.warmup:.0f} s warm-up, {args.duration:.0f} s at {args.rate:.0f} req/s"
            )
            opts = {"rate": args.rate, "procs": args.load_procs, "threads": 16}
            run_load(port, path, key, duration=args.warmup, **opts)
            cpu = server_cpu_s(server.pid)
            row = run_load(port, path, key, duration=args.duration, **opts)
            # Independent of how busy the machine is: the server's own CPU per request.
            row["server_cpu_ms_per_req"] = round(
                1000 * (server_cpu_s(server.pid) - cpu) / max(1, row["requests"]), 2
            )
            row["queries_per_req"] = queries[path]
            rows.append(row)
        load_after = os.getloadavg()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        drop_database(args.pg)

    head = (
        f"{'endpoint':<22} {'target':>7} {'achieved':>9} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8} {'errors':>7} {'cpu ms/req':>11} {'queries':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['endpoint']:<22} {r['target_rps']:>7.0f} {r['achieved_rps']:>9.1f} {r['p50_ms']:>8.2f} "
            f"{r['p90_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} {r['errors']:>7} "
            f"{r['server_cpu_ms_per_req']:>11.2f} {r['queries_per_req']:>8}"
        )
    ok = all(r["p99_ms"] < TARGET_P99_MS and r["errors"] == 0 for r in rows)
    print(
        f"target p99 < {TARGET_P99_MS:.0f} ms at {args.rate:.0f} req/s: {'met' if ok else 'NOT met'}; "
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"on {os.cpu_count()} CPUs (shared machine)"
    )
    summary = {
        "bench": "api",
        "server": f"gunicorn gthread {args.workers}x{args.threads}, DEBUG=false, PostgreSQL, Redis cache",
        "jobs_seeded": args.jobs,
        "results": rows,
        "target_p99_ms": TARGET_P99_MS,
        "target_met": ok,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
