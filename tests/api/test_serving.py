"""The serving path (issue 25) on real processes: a `python -m workers.serve` process and its
wire (a real Redis in the Redis run, the embedded default's SQLite file otherwise), the
live test server, and the real `openai` SDK. Streaming and not; greedy answers batched
equal alone; 429 with Retry-After over the queue's bound and a clear error for a request
that waited too long; a client that goes away cancels its request; the playground's
answers from the serving process, streamed to its page."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import openai
import pytest

from tests.web.conftest import client_for
from tests.web.test_finetune_worker import finished, job_of
from tests.web.test_transfers_worker import cell_create, notebook, run_cell, unlocked
from tests.web.worker_harness import ROOT, database_url, wait_for
from webapp.api.models import ChatCompletion, CompletionStatus
from webapp.jobs import serving
from webapp.jobs.models import Job, JobStatus
from webapp.ops.models import WorkerHost, WorkerState
from webapp.ops.workers import measured_generation
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.services import project_create
from workers.serve import CANCELLED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SERVING_DB = 14
MODEL = "tiny-llama"
ASK = [{"role": "user", "content": "Tell me a long story about a cat."}]


def serving_url(tmp_path: Path) -> str:
    """The wire the suite's broker implies, as settings chooses it: Redis (database
    SERVING_DB, which no other test uses) in the Redis run, an SQLite file otherwise."""
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker.startswith(("redis://", "rediss://")):
        return f"sqlite:///{tmp_path / 'serving.sqlite3'}"
    import redis

    url = urlunsplit(urlsplit(broker)._replace(path=f"/{SERVING_DB}"))
    redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()
    return url


class Serve:
    """A real `python -m workers.serve` against the test database and SERVING_DB."""

    def __init__(self, url: str, tmp_path: Path, **environ: str) -> None:
        self.log = tmp_path / "serve.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "webapp.settings",
            "DATABASE_URL": database_url(),
            "SERVING_URL": url,
            "SERVE_DTYPE": "fp32",  # exact: a greedy answer in a batch equals it alone
            "DATA_DIR": str(tmp_path),
            "MEDIA_ROOT": str(tmp_path / "media"),
            **environ,
        }
        self.out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.serve", "--preload", MODEL],
            cwd=ROOT, env=env, stdout=self.out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: "serve: ready" in self.tail(), timeout=120, what="serve", worker=None)

    def tail(self) -> str:
        if self.proc.poll() is not None:
            raise AssertionError(f"serve exited:\n{self.log.read_text()[-4000:]}")
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


@pytest.fixture
def start_serve(transactional_db, settings, tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    url = serving_url(tmp_path)
    settings.SERVING_URL = url  # the live server's side
    started: list[Serve] = []

    def start(**environ: str) -> Serve:
        started.append(Serve(url, tmp_path, **environ))
        return started[-1]

    try:
        yield start
    finally:
        for serve in started:
            serve.stop()


@pytest.fixture
def client(sdk, owner_key) -> openai.OpenAI:
    return sdk(owner_key)


def _ask(client: openai.OpenAI, content: str, max_tokens: int) -> str:
    messages = [{"role": "user", "content": content}]
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0
    )
    return answer.choices[0].message.content


def test_chat_streamed_and_not_through_the_serving_process(start_serve, client) -> None:
    start_serve()
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "length"
    usage = chunks[-1].usage
    assert usage.completion_tokens == 12 and usage.prompt_tokens > 0
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    answer = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, temperature=0)
    assert answer.choices[0].message.content == streamed
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.total_tokens == usage.total_tokens

    # The database has each answer once, settled by the serving process; no Celery job.
    rows = wait_for(
        lambda: [r for r in ChatCompletion.objects.all() if r.status == CompletionStatus.SUCCEEDED]
        if ChatCompletion.objects.filter(status=CompletionStatus.SUCCEEDED).count() == 2
        else None,
        timeout=30, what="both records", worker=None,
    )  # fmt: skip
    assert [r.text for r in rows] == [streamed, streamed]
    assert all(r.completion_tokens == 12 and r.job_id is None for r in rows)

    # The serving process announced itself, and its answers are its measured throughput.
    host = wait_for(
        lambda: WorkerHost.objects.filter(queues=["serve"]).first(),
        timeout=30, what="the serving host's record", worker=None,
    )  # fmt: skip
    assert host.name == f"serve@{socket.gethostname()}" and host.state == WorkerState.ALIVE
    assert {r.served_by for r in rows} == {host.name} and all(r.generate_s > 0 for r in rows)
    rate = 24 / sum(r.generate_s for r in rows)
    held = f"{MODEL} ({rows[0].quantization})"
    assert measured_generation(host) == [f"{held}: {rate:.1f} output tokens/s, 2 answers"]


def test_greedy_answers_batched_equal_each_alone(start_serve, client) -> None:
    start_serve()
    asks = [(f"Question {i}: " + "why? " * (i % 4), 8 + 3 * i) for i in range(8)]
    alone = [_ask(client, content, n) for content, n in asks]
    with ThreadPoolExecutor(len(asks)) as pool:
        batched = list(pool.map(lambda a: _ask(client, *a), asks))
    assert batched == alone
    assert len(set(alone)) > 1  # the questions differ, and so do the answers


def test_over_the_bound_429_and_a_queued_request_times_out(start_serve, client, settings) -> None:
    settings.SERVE_QUEUE_MAX, settings.SERVE_RETRY_AFTER_S = 1, 3
    settings.SERVE_QUEUE_TIMEOUT_S = 3
    start_serve(SERVE_MAX_BATCH="1")
    busy = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=4000, temperature=0, stream=True
    )
    chunks = iter(busy)
    next(chunks), next(chunks)  # text came: the batch's one row is taken
    with ThreadPoolExecutor(1) as pool:
        queued = pool.submit(_ask, client, "Hi", 4)  # waits in the queue (its bound: 1)
        wait_for(lambda: _queue_length() == 1, timeout=10, what="a queued request", worker=None)
        with pytest.raises(openai.RateLimitError) as refused:
            _ask(client, "Hi", 4)
        assert refused.value.response.headers["retry-after"] == "3"
        assert refused.value.code == "server_busy"
        with pytest.raises(openai.InternalServerError) as late:
            queued.result(timeout=60)
    assert late.value.status_code == 503
    assert late.value.code == "queue_timeout"
    busy.close()
    # Every request has its outcome in the database: none is left queued.
    wait_for(
        lambda: not ChatCompletion.objects.exclude(status=CompletionStatus.FAILED).exists(),
        timeout=30, what="every record settled", worker=None,
    )  # fmt: skip
    errors = set(ChatCompletion.objects.values_list("error", flat=True))
    assert errors == {CANCELLED, "Refused: the serving queue was full.", serving.QUEUE_TIMEOUT}


def test_no_answer_in_time_is_a_504_and_the_record_says_so(
    transactional_db, settings, client, tmp_path
) -> None:
    settings.SERVING_URL = serving_url(tmp_path)  # and no serving process
    settings.API_CHAT_TIMEOUT_S = 2
    with pytest.raises(openai.APIStatusError) as late:
        _ask(client, "Hi", 4)
    assert late.value.status_code == 504 and late.value.code == "timeout"
    row = ChatCompletion.objects.get()
    assert row.status == CompletionStatus.FAILED and row.error.startswith("Generation timed out")
    # It is still queued, marked cancelled: a serving process that comes later drops it.
    assert _queue_length() == 1
    assert serving.cancelled([f"chatcmpl-{row.pk}"]) == [True]


def _queue_length() -> int:
    return serving.wire().length()


def test_a_client_that_goes_away_cancels_its_request(start_serve, client) -> None:
    serve = start_serve()
    stream = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=4000, temperature=0, stream=True
    )
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    stream.close()
    row = wait_for(
        lambda: ChatCompletion.objects.filter(status=CompletionStatus.FAILED).first(),
        timeout=30, what="the cancelled record", worker=None,
    )  # fmt: skip
    assert row.error.startswith("Cancelled"), row.error
    # The serving process goes on: the next request is answered.
    assert _ask(client, "Hi", 3)
    assert serve.proc.poll() is None


def test_the_playground_answers_from_the_serving_process(
    start_serve, start_worker, client, team, owner, settings
) -> None:
    start_serve()
    worker = start_worker(SERVING_URL=settings.SERVING_URL)
    project = unlocked(lambda: project_create(team=team, name="Chat", created_by=owner))
    prompt, tokens = "Tell me a long story about a cat.", 16
    config = {"base_model": MODEL, "prompt": prompt, "temperature": 0.0, "max_new_tokens": tokens}
    cell = cell_create(project=project, kind="playground", config=config, created_by=owner)
    run = run_cell(cell, owner)
    # Its task only waits for the serving process: the CPU lane, not the GPU queue.
    assert Job.objects.get(pk=run.job_id).params["_task"]["queue"] == "default"
    page = client_for(owner).get(f"/runs/{run.pk}/stream/")
    events = [line for line in b"".join(page.streaming_content).decode().split("\n\n") if line]
    assert events[-1] == "event: end\ndata: {}"
    streamed = "".join(
        json.loads(e[6:]).get("text", "") for e in events if e.startswith('data: {"answer')
    )
    wait_for(
        lambda: CellRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED,
        timeout=60, what="the playground run", worker=worker,
    )  # fmt: skip
    (answer,) = CellRun.objects.get(pk=run.pk).outputs["answers"]
    assert answer["done"] and answer["completion_tokens"] == tokens
    assert answer["text"] == streamed == _ask(client, prompt, tokens)


def test_the_embedded_workers_serve_a_chat_while_a_fine_tune_trains(
    start_worker, client, team, owner, settings, tmp_path
) -> None:
    """`make run`'s workers (workers.embedded) start the serving process beside the lanes:
    a chat sent while a fine-tune trains is answered by it, mid-run, and the CPU fine-tune
    waits between its steps while the serving process is busy, then trains on."""
    settings.SERVING_URL = url = serving_url(tmp_path)
    worker = start_worker(embedded=True, SERVING_URL=url, SERVE_DTYPE="fp32")
    steps = 400
    cells = notebook(team, owner, worker, max_steps=steps, eval_every=1000, save_every=1000)
    run = run_cell(cells["finetune"], owner)
    wait_for(lambda: job_of(run).progress_current >= 3, timeout=120, what="steps", worker=worker)

    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=8, temperature=0, stream=True
        )
    )
    assert chunks[-1].choices[0].finish_reason == "length"
    training = job_of(run)
    assert training.status == JobStatus.RUNNING, "answered only after the fine-tune"
    assert 3 <= training.progress_current < steps
    row = wait_for(
        lambda: ChatCompletion.objects.filter(status=CompletionStatus.SUCCEEDED).first(),
        timeout=30, what="the chat's record", worker=worker,
    )  # fmt: skip
    assert row.served_by == f"serve@{socket.gethostname()}" and row.job_id is None
    assert "waited" in wait_for(
        lambda: "for the serving process" in worker.tail(100_000) and worker.tail(100_000),
        timeout=30, what="the fine-tune's yield", worker=worker,
    )  # fmt: skip

    wait_for(finished(run), timeout=240, what="the fine-tune", worker=worker)
    done = CellRun.objects.get(pk=run.pk)
    assert job_of(run).status == JobStatus.SUCCEEDED and done.status == RunStatus.SUCCEEDED
    assert [h["step"] for h in done.outputs["history"]] == list(range(1, steps + 1))


def test_a_burst_taken_in_time_is_answered_however_long_it_waits_to_start(
    settings, tmp_path
) -> None:
    """Both requests of a playground run are taken together. Before they start, the loop
    waits for a fine-tune's step in flight (its TRAINING mark, 0.6 s here) and loads the
    model (36 s once in the browser re-walk), past their 0.2 s queue deadline; still
    neither is failed as never taken."""
    import time

    from workers.serve import Server
    from workers.serve_engines import Engines

    settings.SERVING_URL = f"sqlite:///{tmp_path / 'serving.sqlite3'}"
    settings.SERVE_QUEUE_TIMEOUT_S = 0.2
    ask = {"model": MODEL, "messages": ASK, "max_tokens": 4, "temperature": 0}
    asks = [serving.ServeRequest(**ask), serving.ServeRequest(**ask)]
    for request in asks:
        serving.submit(request)
    serving.mark(serving.TRAINING, "burst-host", 0.6)  # a step in flight, never paused
    server = Server(Engines(), max_batch=4, host="burst-host")
    try:
        started = time.monotonic()
        server._take()
        assert time.monotonic() - started > 0.5  # past the requests' deadline
        assert set(server.live) == {request.id for request in asks}
        while server.live:
            server.turn()
    finally:
        server.shutdown()
    for request in asks:
        assert [e for _, e in serving.wire().read(request.id, "", 0)][-1]["t"] == "done"
