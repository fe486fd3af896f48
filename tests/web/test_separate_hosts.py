"""Hosts that share nothing (issue 21): a web host and two GPU-worker hosts, each in its own
network namespace with its own empty DATA_DIR, scratch and model cache, the other hosts'
folders covered (tests/hosts.py). They share what hosted workers share: PostgreSQL and
Redis (reached over their links) and an S3-compatible store (moto's server).

Upload through the API, fine-tune on worker A, SIGKILL every process of A mid-training,
resume on worker B from the checkpoint in object storage, chat with the result and
download the adapter zip from the web host.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import psycopg
import pytest
import requests

from tests.hosts import MAKE_KEY, Forward, Host, hosts, unavailable, wait_port
from tests.s3server import REGION, credentials_env, free_port, s3_server

PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


def _no_postgres() -> str | None:
    """The hosts share the machine's PostgreSQL (each run gets its own database)."""
    try:
        psycopg.connect(PG_ADMIN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        return f"separate hosts need PostgreSQL at 127.0.0.1:5432: {exc}"
    return None


REASON = unavailable() or _no_postgres()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.own_servers,  # a database of its own on the machine's PostgreSQL, and Redis
    pytest.mark.timeout(600),
    pytest.mark.skipif(REASON is not None, reason=REASON or ""),
]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROWS = [(f"What is {i} plus one?", f"{i + 1}") for i in range(20)]
DATA = "".join(
    json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    + "\n"
    for q, a in ROWS
).encode()
STEPS, EVERY = 120, 10
SETTINGS = {
    "max_steps": STEPS, "save_every": EVERY, "eval_every": EVERY, "quantization": "none",
    "preset": "quick", "max_length": 128, "lora_r": 4, "warmup_ratio": 0.0,
    "keep_transferable": False,
}  # fmt: skip


def until(
    get: Callable[[], Any], done: Callable[[Any], bool], what: str, logs: Callable[[], str]
) -> Any:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        value = get()
        if done(value):
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{logs()}")


class Cluster:
    """The shared services and the three hosts, with each host's environment."""

    def __init__(self, stack: ExitStack, base: Path) -> None:
        self.s3 = stack.enter_context(s3_server(host="0.0.0.0"))
        self.s3.make_bucket("tunebook")
        self.redis_port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "0.0.0.0",
             "--protected-mode", "no", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        stack.callback(redis.kill)
        self.pg = Forward(5432)
        stack.callback(self.pg.close)
        self.db = f"tb_hosts_{os.getpid()}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        stack.callback(self._drop_db)
        self.hosts = stack.enter_context(hosts(base, ["web", "worker-a", "worker-b"]))
        wait_port("127.0.0.1", self.redis_port, timeout=10, what="redis-server")

    def _drop_db(self) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')

    def env(self, host: Host) -> dict[str, str]:
        gw, s3_port = host.gateway, self.s3.endpoint.rsplit(":", 1)[1]
        own = {
            "DATABASE_URL": f"postgres://postgres@{gw}:{self.pg.port}/{self.db}",
            "CELERY_BROKER_URL": f"redis://{gw}:{self.redis_port}/0",
            "STORAGE_URL": f"s3://tunebook?endpoint_url=http://{gw}:{s3_port}&region={REGION}",
            "DATA_DIR": str(host.root / "data"),
            "SCRATCH_DIR": str(host.root / "scratch"),
            "FINETUNE_CORE_CACHE": str(host.root / "model-cache"),
            "ALLOWED_HOSTS": self.hosts["web"].address,
            "SECURE_COOKIES": "false",
            "JOB_STALE_AFTER_S": "8",
            "JOB_RECOVER_EVERY_S": "2",
            "PYTHONUNBUFFERED": "1",
        }
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "SECRET_KEY", "LANG")}
        return {**keep, **credentials_env(), **own}

    def run(self, host: Host, argv: list[str], log: str) -> str:
        proc = host.start(argv, self.env(host), log, cwd=ROOT)
        assert proc.wait(timeout=180) == 0, host.log(log)
        return host.log(log)

    def worker(self, name: str, *, beat: bool = False) -> None:
        host = self.hosts[name]
        argv = [str(BIN / "celery"), "-A", "workers", "worker", "-P", "solo", "-c", "1",
                "-Q", "default,gpu,background", "-n", f"{name}@tb", "-l", "info"]  # fmt: skip
        if beat:
            argv += ["-B", "-s", str(host.root / "beat-schedule")]
        host.start(argv, self.env(host), "worker", cwd=ROOT)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with ExitStack() as stack:
        yield Cluster(stack, tmp_path)


def files_of(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_train_on_a_then_resume_on_b_after_a_dies_then_chat_and_download(cluster: Cluster) -> None:
    web, a, b = (cluster.hosts[n] for n in ("web", "worker-a", "worker-b"))
    python = str(BIN / "python")
    cluster.run(web, [python, "manage.py", "migrate", "--noinput"], "migrate")
    # The built-in models' records, written from a worker host (where models live).
    cluster.run(a, [python, "-m", "workers.catalog"], "models")
    key = re.search(
        r"KEY=(\S+)", cluster.run(web, [python, "manage.py", "shell", "-c", MAKE_KEY], "key")
    )[1]
    gunicorn = [str(BIN / "gunicorn"), "webapp.wsgi", "-b", f"{web.address}:8000", "-w", "2",
                "--threads", "4", "--timeout", "120"]  # fmt: skip
    web.start(gunicorn, cluster.env(web), "web", cwd=ROOT)
    wait_port(web.address, 8000, timeout=60, what="the web host")
    cluster.worker("worker-a")

    def logs() -> str:
        tails = [
            f"--- {h.name}\n{h.log(n)[-3000:]}"
            for h, n in ((a, "worker"), (b, "worker"), (b, "serve"), (web, "web"))
        ]
        return "\n".join(tails)

    client = openai.OpenAI(base_url=f"http://{web.address}:8000/v1", api_key=key, max_retries=0)

    upload = client.files.create(file=("plus.jsonl", DATA), purpose="fine-tune")
    upload = until(
        lambda: client.files.retrieve(upload.id),
        lambda f: f.status != "uploaded" and f.status != "running",
        "validation",
        logs,
    )
    assert upload.status == "processed", upload.status_details
    assert client.files.content(upload.id).content == DATA  # streamed out of the bucket
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=upload.id, suffix="hosts",
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 2}}},
        extra_body={"tunebook": SETTINGS},
    )  # fmt: skip
    run_id = job.model_extra["tunebook"]["run_id"]

    # Worker A dies, all of its processes at once, once a checkpoint is in the store.
    def steps() -> list[int]:
        return [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data]

    until(steps, lambda s: bool(s), "a checkpoint from worker A", logs)
    assert a.kill_all(), "worker A had no process to kill"
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    cluster.worker("worker-b", beat=True)
    # Chat answers on a Redis broker: the serving process beside B's training worker.
    b.start([python, "-m", "workers.serve"], cluster.env(b), "serve", cwd=ROOT)
    done = until(
        lambda: client.fine_tuning.jobs.retrieve(job.id),
        lambda j: j.status in ("succeeded", "failed", "cancelled"),
        "the job on worker B",
        logs,
    )
    assert done.status == "succeeded", (done.error, logs())
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=200)]
    resumed = [
        int(m.rsplit(" ", 1)[1]) for m in events if m.startswith("Resuming from the checkpoint")
    ]
    assert resumed and resumed[0] >= EVERY, events  # from what A uploaded, not from scratch
    assert re.search(r"run_cell\[\S+\] received", b.log("worker")), "worker B never took the job"

    # One continuous step history, from the run's row.
    with psycopg.connect(f"postgres://postgres@127.0.0.1:5432/{cluster.db}") as conn:
        (outputs,) = conn.execute(
            "SELECT outputs FROM projects_cellrun WHERE id = %s", [run_id]
        ).fetchone()
    history = [h["step"] for h in outputs["history"]]
    assert history == list(range(1, STEPS + 1)), history  # no step lost or repeated
    assert re.fullmatch(r"runs/\d+", outputs["output_dir"]), outputs["output_dir"]

    answer = client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "What is 3 plus one?"}],
        max_tokens=4, temperature=0,
    )  # fmt: skip
    assert isinstance(answer.choices[0].message.content, str) and answer.usage.completion_tokens > 0

    site = f"http://{web.address}:8000"
    with requests.Session() as browser:
        page = browser.get(f"{site}/accounts/login/", timeout=60)
        assert page.status_code == 200 and "csrftoken" in browser.cookies, (page, page.headers)
        token = browser.cookies["csrftoken"]
        form = {"username": "ada", "password": "correct-horse-battery-9"}
        login = browser.post(
            f"{site}/accounts/login/", data={**form, "csrfmiddlewaretoken": token},
            allow_redirects=False, timeout=60,
        )  # fmt: skip
        assert login.status_code == 302, login.text[:500]
        zipped = browser.get(f"{site}/runs/{run_id}/artifacts.zip", timeout=60)
    assert zipped.status_code == 200, zipped.text[:500]
    names = set(zipfile.ZipFile(io.BytesIO(zipped.content)).namelist())
    assert {"adapter/adapter_model.safetensors", "manifest.json"} <= names

    # Nothing went through a shared folder: the web host kept no run file, B started empty
    # and fetched the checkpoint, and the finished run is in the bucket.
    assert not [f for f in files_of(web.root) if "/runs/" in f or f.endswith(".safetensors")]
    assert any("checkpoints/step-" in f for f in files_of(a.root / "scratch")), (
        "A trained in its scratch"
    )
    stored = {o["Key"] for o in cluster.s3.client().list_objects_v2(Bucket="tunebook")["Contents"]}
    run_key = outputs["output_dir"]
    assert f"artifacts/{run_key}/manifest.json" in stored
    assert f"artifacts/{run_key}/adapter/adapter_model.safetensors" in stored
