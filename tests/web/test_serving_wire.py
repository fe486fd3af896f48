"""The serving path's SQLite wire (the embedded default's; webapp/jobs/serving_wire.py) keeps
the promises the Redis wire keeps: first in first out, a bound that holds when many
processes push at once, each request taken exactly once when many processes take at once,
events read from the start by any reader, marks that expire. Real processes, one file."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from webapp.jobs.serving_wire import EVENTS_TTL_S, SqliteWire, connect

CTX = multiprocessing.get_context("spawn")


@pytest.fixture
def wire(tmp_path: Path) -> SqliteWire:
    made = connect(f"sqlite:///{tmp_path / 'serving.sqlite3'}")
    assert isinstance(made, SqliteWire) and made.path == str(tmp_path / "serving.sqlite3")
    return made


def test_first_in_first_out_within_its_bound(wire: SqliteWire) -> None:
    assert [wire.push(f"r{i}", 3) for i in range(4)] == [True, True, True, False]
    assert wire.length() == 3
    assert wire.remove("r1") and not wire.remove("r1")
    assert wire.take(5, 0) == ["r0", "r2"]
    assert wire.take(5, 0) == [] and wire.length() == 0


def test_a_blocking_take_returns_what_another_thread_pushes(wire: SqliteWire) -> None:
    threading.Timer(0.3, wire.push, ("late", 10)).start()
    assert wire.take(1, 5) == ["late"]
    started = time.monotonic()
    assert wire.take(1, 0.3) == []
    assert time.monotonic() - started >= 0.3


def _push_many(path: str, name: str, count: int, bound: int) -> int:
    wire = SqliteWire(path)
    return sum(wire.push(f"{name}-{i}", bound) for i in range(count))


def _take_all(path: str, into: multiprocessing.Queue) -> None:
    wire, taken = SqliteWire(path), []
    while batch := wire.take(3, 0.5):
        taken += batch
    into.put(taken)


def test_many_processes_push_within_the_bound_and_take_each_request_once(
    wire: SqliteWire,
) -> None:
    with CTX.Pool(4) as pool:
        accepted = pool.starmap(_push_many, [(wire.path, f"p{n}", 40, 100) for n in range(4)])
    assert sum(accepted) == 100 == wire.length()  # 160 pushed, the bound held

    into = CTX.Queue()
    takers = [CTX.Process(target=_take_all, args=(wire.path, into)) for _ in range(4)]
    for taker in takers:
        taker.start()
    taken = [raw for _ in takers for raw in into.get(timeout=60)]
    for taker in takers:
        taker.join(timeout=30)
    assert len(taken) == 100 and len(set(taken)) == 100
    assert wire.length() == 0


def test_every_reader_reads_a_requests_events_from_the_start(wire: SqliteWire) -> None:
    wire.publish({"a": [{"t": "text", "text": "Hel"}], "b": [{"t": "text", "text": "x"}]})
    wire.publish({"a": [{"t": "text", "text": "lo"}, {"t": "done"}]})
    first = wire.read("a", "", 0)
    assert [e for _, e in first] == [
        {"t": "text", "text": "Hel"}, {"t": "text", "text": "lo"}, {"t": "done"},
    ]  # fmt: skip
    assert wire.read("a", "", 0) == first  # a second reader sees the same
    assert wire.read("a", first[0][0], 0) == first[1:]  # a cursor resumes after its event
    assert wire.read("a", first[-1][0], 0.2) == []
    threading.Timer(0.3, wire.publish, ({"a": [{"t": "more"}]},)).start()
    assert [e for _, e in wire.read("a", first[-1][0], 5)] == [{"t": "more"}]


def test_marks_expire_and_prune_forgets_old_answers(wire: SqliteWire) -> None:
    wire.flag("cancel", "a", 60)
    wire.flag("busy", "host", 0.2)
    assert wire.flagged("cancel", ["a", "b"]) == [True, False]
    assert wire.flagged("busy", ["host"]) == [True]
    time.sleep(0.3)
    assert wire.flagged("busy", ["host"]) == [False]

    wire.publish({"old": [{"t": "done"}], "new": [{"t": "done"}]})
    db = wire._db()
    db.execute("UPDATE events SET at = at - ? WHERE rid = 'old'", (EVENTS_TTL_S + 1,))
    wire.prune()
    assert wire.read("old", "", 0) == [] and len(wire.read("new", "", 0)) == 1
    assert db.execute("SELECT count(*) FROM flags").fetchone()[0] == 1  # only the cancel


@pytest.mark.parametrize(
    ("broker", "serving"),
    [
        ("sqla+sqlite:///{data}/celery-broker.sqlite", "sqlite:///{data}/serving.sqlite3"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("amqp://guest@localhost//", ""),
    ],
)
def test_the_wire_follows_the_broker_by_default(tmp_path: Path, broker: str, serving: str) -> None:
    code = "from django.conf import settings; print(settings.SERVING_URL)"
    env = {"DJANGO_SETTINGS_MODULE": "webapp.settings", "DATA_DIR": str(tmp_path)}
    env |= {"CELERY_BROKER_URL": broker.format(data=tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert out.stdout.strip() == serving.format(data=tmp_path)


def test_a_cpu_fine_tune_and_the_serving_process_on_its_host_take_turns(
    settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webapp.jobs import serving
    from webapp.jobs.serving import BUSY, PAUSED, TRAINING
    from workers import between_steps
    from workers.serve import Server

    settings.SERVING_URL = f"sqlite:///{tmp_path / 'serving.sqlite3'}"
    pause = between_steps.YieldToServing("this-host")
    started = time.monotonic()
    pause()  # nothing served: no wait, and the host is marked as training
    assert time.monotonic() - started < between_steps.YIELD_POLL_S
    assert serving.marked(TRAINING, "this-host") and not serving.marked(PAUSED, "this-host")

    # A new burst waits for the step in flight to end: until the fine-tune pauses.
    server = Server(None, max_batch=1, host="this-host")  # type: ignore[arg-type] - no engine
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        making_room = pool.submit(server._make_room)
        time.sleep(0.5)  # the step in flight
        assert not making_room.done() and serving.marked(BUSY, "this-host")
        pausing = pool.submit(pause)  # the step ended: it pauses while the host is busy
        making_room.result(timeout=5)
        assert time.monotonic() - started >= 0.5
        assert serving.marked(PAUSED, "this-host") and not pausing.done()
        server.shutdown()  # the burst is over: its busy mark expires, the fine-tune goes on
        pausing.result(timeout=5)

    serving.mark(BUSY, "other-host", 60)  # another host's serving: not this one's
    started = time.monotonic()
    pause()
    assert time.monotonic() - started < between_steps.YIELD_POLL_S

    # A stream of requests that never ends holds a step back at most YIELD_MAX_S.
    monkeypatch.setattr(between_steps, "YIELD_MAX_S", 0.5)
    serving.mark(BUSY, "this-host", 60)
    time.sleep(between_steps.YIELD_POLL_S)
    started = time.monotonic()
    pause()
    assert 0.5 <= time.monotonic() - started < 5 and serving.marked(BUSY, "this-host")

    # Training over: a new burst does not wait for the TRAINING mark's TTL.
    assert serving.marked(TRAINING, "this-host")
    between_steps.finished(pause)
    assert not serving.marked(TRAINING, "this-host")
