"""make bench-serve (issue 25): 16 clients chatting at once through the real `openai` SDK
(stream=True, loopback), today's path against the serving path, in one run.

Set-up: a fresh SQLite database with a team, a key and four notebook fine-tunes whose
adapters are LoRA adapters of SmolLM2-135M-Instruct (r=16 on every linear layer, random
weights nudged small; benchmarks/bench_serve_engine.make_adapters), the base in 4-bit NF4.
The web side is gunicorn (gthread, one process, 32 threads) on loopback.

- serial: today's path, SERVING_URL=off: each answer is a Celery task on the `gpu` queue
  of one worker (concurrency 1, its model cache warm), the view polling the row. It
  answers one request at a time, so its tokens/s is the same for 4 clients as for 16 and
  only --serial-clients (4) are sent, to keep the run short (16 take over 10 minutes
  here); its TTFT is that of 4 clients, the 16th client's is about 4 times longer;
- serving, 1 adapter: SERVING_URL set, `python -m workers.serve --preload` (warm), every
  client on the same adapter;
- serving, 4 adapters: the same, client i on adapter i % 4;
- serving, 4 adapters, +train: the same while a LoRA fine-tune of the base
  (`python -m finetune_core train`, its own process) trains on the same CPUs, both
  running at once, as on a GPU (--no-finetune skips it). training_slowdown_of_serving:
  serving's tokens/s without the fine-tune over with it; serving_slowdown_of_training:
  the fine-tune's tokens/s alone (its steps before the clients) over during the clients;
- serving, 4 adapters, +train yielding: the same with the fine-tune waiting between its
  steps while the serving process is busy, as a CPU worker's fine-tune does
  (benchmarks/train_yielding.py); *_yielding in the JSON.

--wire sqlite serves through the embedded default's SQLite wire instead of Redis.

Every client asks for 64 tokens at temperature 0 (ignoring end of turn is not offered by
the API, so a short answer ends early; the table counts the tokens actually produced).
All 16 start together; time to first token counts from that start. Prints a table
(tokens/s, TTFT p50/p99, time per output token, wall) and one JSON line, last, with
throughput_ratio_vs_serial, four_vs_one_adapter_time_ratio and ttft_p50_s.

    python -m benchmarks.bench_serve [--clients 16] [--tokens 64] [--model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from benchmarks.bench_serve_engine import QUESTIONS, figures
from benchmarks.serve_beside_training import fine_tune, slowdowns

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TRAIN = "serving, 4 adapters, +train"
YIELDING = "serving, 4 adapters, +train yielding"
REDIS_DB = 12  # no test uses it (tests: 0 in their own servers, 14, 15)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- set-up ------------------------------------------------------------------------------


def seed(model: str, adapters: int) -> None:
    """In a child process with the bench environment: prints the key and the model ids."""
    import django

    django.setup()
    from webapp.accounts.services import user_signup
    from webapp.api.keys import api_key_create
    from webapp.api.v1.selectors import notebook_model_id
    from webapp.core import storage
    from webapp.projects.models import Cell, CellRun, RunStatus
    from webapp.projects.services import project_create
    from webapp.teams.services import team_create

    user = user_signup(username="bench", password="bench-password-9", email="b@example.com")
    team = team_create(name="Bench", owner=user)
    project = project_create(team=team, name="Adapters", created_by=user)
    key = api_key_create(team=team, created_by=user, name="bench")[1]
    folder = storage.local_path("bench-adapters")
    _make_adapters(model, adapters, folder)
    ids = []
    for i in range(adapters):
        cell = Cell.objects.create(project=project, position=i, kind="finetune", title=f"a{i}")
        run = CellRun.objects.create(
            cell=cell, version=1, status=RunStatus.SUCCEEDED,
            inputs={"base_model": model, "quantization": "nf4"},
            outputs={"adapter_dir": f"bench-adapters/a{i}"},
        )  # fmt: skip
        ids.append(notebook_model_id(run, team))
    print(json.dumps({"key": key, "models": ids}))


def _make_adapters(model: str, n: int, folder: Path) -> None:
    from benchmarks.bench_serve_engine import make_adapters

    folder.mkdir(parents=True, exist_ok=True)
    make_adapters(model, n, folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """The processes of one path: gunicorn, and a Celery worker or the serving process."""

    def __init__(self, env: dict[str, str], tmp: Path, name: str, serving: bool, model: str):
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()
        gunicorn = [PY, "-m", "gunicorn", "webapp.wsgi", "-b", f"127.0.0.1:{self.port}",
                    "-k", "gthread", "-w", "1", "--threads", "32", "--timeout", "1000"]  # fmt: skip
        if serving:
            back = [PY, "-m", "workers.serve", "--preload", model]
        else:
            back = [PY, "-m", "celery", "-A", "workers", "worker", "-Q", "gpu", "-c", "1",
                    "-P", "solo", "--without-gossip", "--without-mingle", "-n", f"{name}@bench"]  # fmt: skip
        for i, cmd in enumerate((gunicorn, back)):
            log = (tmp / f"{name}-{i}.log").open("w")
            self.procs.append(
                subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            )

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- the clients -------------------------------------------------------------------------


def one_client(client: Any, model: str, question: str, tokens: int, t0: float) -> dict:
    first = None
    used = 0
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=tokens,
        temperature=0, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter()
        if chunk.usage is not None:
            used = chunk.usage.completion_tokens
    done = time.perf_counter()
    return {"ttft": (first or done) - t0, "tokens": used, "span": done - (first or done)}


def run_clients(port: int, key: str, models: list[str], clients: int, tokens: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0,
                    timeout=900)  # fmt: skip
    results: list[dict] = [{} for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    t0 = [0.0]

    def go(i: int) -> None:
        start.wait()
        question = QUESTIONS[i % len(QUESTIONS)]
        try:
            results[i] = one_client(client, models[i % len(models)], question, tokens, t0[0])
        except Exception as exc:  # noqa: BLE001 - counted, and said
            results[i] = {"error": f"{type(exc).__name__}: {exc}"}

    threads = [threading.Thread(target=go, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    t0[0] = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0[0]
    errors = [r["error"] for r in results if "error" in r]
    done = [r for r in results if "error" not in r]
    if errors:
        say(f"{len(errors)} of {clients} clients failed, e.g. {errors[0]}")
    if not done:
        raise SystemExit("every client failed")
    row = figures(
        [r["ttft"] for r in done], [r["tokens"] for r in done], [r["span"] for r in done], wall
    )
    return {**row, "errors": len(errors)}


def warm(port: int, key: str, models: list[str], stack: Stack, log: Path) -> None:
    """Each model answers once (bases and adapters loaded) before anything is timed."""
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0,
                    timeout=600)  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        if any(p.poll() is not None for p in stack.procs):
            raise SystemExit(f"a process of the stack exited; see {log}")
        try:
            client.models.list()
            break
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    for model in models:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )


# --- the run -----------------------------------------------------------------------------


def serving_wire(args: argparse.Namespace, tmp: Path) -> str:
    """The serving path's SERVING_URL: Redis database REDIS_DB, emptied, or an SQLite file."""
    if args.wire == "sqlite":
        return f"sqlite:///{tmp / 'serving.sqlite3'}"
    import redis

    url = urlunsplit(urlsplit(args.redis)._replace(path=f"/{REDIS_DB}"))
    redis.Redis.from_url(url).flushdb()
    return url


def environment(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DEBUG": "false",
        "SECRET_KEY": "bench-serve-secret-key-not-for-production-0123456789",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "CELERY_BROKER_URL": f"sqla+sqlite:///{tmp / 'broker.sqlite'}",
        "DATA_DIR": str(tmp),
        "MEDIA_ROOT": str(tmp / "media"),
        "API_RATE_LIMIT": "100000000",
        "LOG_LEVEL": "WARNING",
        # Today's path answers one request at a time: the last of 16 waits minutes.
        "API_CHAT_TIMEOUT_S": "900",
        "API_REQUEST_TIME_LIMIT_S": "1000",
        "FINETUNE_CORE_CACHE": os.environ.get("FINETUNE_CORE_CACHE", str(ROOT / ".cache")),
    }


def set_up(env: dict[str, str], model: str, adapters: int) -> dict[str, Any]:
    say("migrating and seeding a fresh database, making the adapters ...")
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
                   check=True)  # fmt: skip
    subprocess.run([PY, "-m", "workers.catalog"], cwd=ROOT, env=env, check=True)
    out = subprocess.run(
        [PY, "-m", "benchmarks.bench_serve", "--seed-only", "--model", model,
         "--adapters", str(adapters)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def measure(
    env: dict[str, str], tmp: Path, seeded: dict, args: argparse.Namespace, serving: bool
) -> dict[str, dict[str, Any]]:
    name = "serving" if serving else "serial"
    stack = Stack(env, tmp, name, serving, args.model)
    models, rows = seeded["models"], {}
    try:
        say(f"{name}: starting and warming up ...")
        warm(stack.port, seeded["key"], models, stack, tmp)
        plans = {"serving, 1 adapter": models[:1], "serving, 4 adapters": models}
        clients = args.clients if serving else args.serial_clients
        if not serving:
            plans = {f"serial (today), {clients} clients": models}
        for label, use in plans.items():
            say(f"{label}: {clients} clients x {args.tokens} tokens ...")
            rows[label] = run_clients(stack.port, seeded["key"], use, clients, args.tokens)
            say(f"{label}: {json.dumps(rows[label])}")  # kept if a later phase fails
        for label, yielding in ((TRAIN, False), (YIELDING, True)):
            if not (serving and args.finetune):
                break
            say(f"{label}: the same while a fine-tune of the base trains on this machine ...")
            with fine_tune(env, tmp, args.model, yielding) as training:
                rows[label] = run_clients(
                    stack.port, seeded["key"], models, args.clients, args.tokens
                )
            rows[label]["training_steps_per_s"] = training
    finally:
        stack.stop()
    return rows


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = f"{'path':38} {'tokens':>6} {'tok/s':>7} {'TTFT p50':>9} {'TTFT p99':>9} {'s/token':>8} {'wall s':>7}"
    lines = [head, "-" * len(head)]
    for label, r in rows.items():
        lines.append(
            f"{label:38} {r['output_tokens']:6d} {r['tokens_per_s']:7.1f} "
            f"{r['ttft_p50_s']:9.2f} {r['ttft_p99_s']:9.2f} "
            f"{r['time_per_output_token_s'] or 0:8.3f} {r['seconds']:7.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--serial-clients", type=int, default=4,
                    help="clients on today's path (one answer at a time: its tokens/s does not "
                         "depend on how many wait, their waits do)")  # fmt: skip
    ap.add_argument("--adapters", type=int, default=4)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="its host is used")
    ap.add_argument("--wire", choices=("redis", "sqlite"), default="redis",
                    help="the serving wire: Redis, or the embedded default's SQLite file")  # fmt: skip
    ap.add_argument("--no-finetune", dest="finetune", action="store_false",
                    help="skip the row measured while a fine-tune trains")  # fmt: skip
    ap.add_argument("--seed-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.seed_only:
        seed(args.model, args.adapters)
        return
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        serving_url = serving_wire(args, tmp)
        env = environment(tmp)
        seeded = set_up(env, args.model, args.adapters)
        rows = measure({**env, "SERVING_URL": "off"}, tmp, seeded, args, serving=False)
        rows |= measure({**env, "SERVING_URL": serving_url}, tmp, seeded, args, serving=True)
    serial, one, four = list(rows.values())[:3]
    result = {
        "bench": "serve",
        "wire": args.wire,
        "model": f"{args.model} nf4",
        "clients": args.clients,
        "max_tokens": args.tokens,
        "adapters": args.adapters,
        "throughput_ratio_vs_serial": round(four["tokens_per_s"] / serial["tokens_per_s"], 2),
        # per output token, so answers of other lengths do not skew it
        "four_vs_one_adapter_time_ratio": round(
            (four["seconds"] / four["output_tokens"]) / (one["seconds"] / one["output_tokens"]), 2
        ),
        "ttft_p50_s": round(four["ttft_p50_s"], 3),
        "ttft_p99_s": round(four["ttft_p99_s"], 3),
        "serial_ttft_p50_s": round(serial["ttft_p50_s"], 3),
        **(slowdowns(four, rows[TRAIN], "") if args.finetune else {}),
        **(slowdowns(four, rows[YIELDING], "_yielding") if args.finetune else {}),
        "rows": {
            k: {m: round(v, 4) if isinstance(v, float) else v for m, v in r.items()}
            for k, r in rows.items()
        },  # fmt: skip
    }
    print(table(rows))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
