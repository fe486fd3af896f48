"""The serving path's two transports, one interface (webapp/jobs/serving.py says what
travels; this says how). SERVING_URL picks one:

- `redis://…` (a Redis broker): a list as the queue (LPUSH, RPOP: first in, first out;
  a Lua script bounds it atomically), a stream `out:<id>` of events per request (every
  reader reads it from its start; nothing is lost before the first read), keys for
  cancels and for a host's busy mark, each with a TTL.
- `sqlite:///path` (the embedded default, beside the SQLite broker; four slashes for an
  absolute path, as SQLAlchemy reads it): the same four things as tables in their own
  SQLite file in WAL mode, so the web process, the workers and the serving process share
  them on one host. Blocking reads poll every POLL_S; a bounded
  push and a take are each one IMMEDIATE transaction, so no two processes take one request.
  The serving process prunes expired events and marks as it goes (`prune`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

PREFIX = "tunebook:serve:"
QUEUE = PREFIX + "queue"
EVENTS_TTL_S = 10 * 60  # an answer nobody reads expires
POLL_S = 0.02  # the SQLite wire's blocking reads look this often
Event = dict[str, Any]
# LPUSH unless the queue already holds ARGV[1] requests; the new length, or -1 when full.
_PUSH_BOUNDED = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then return -1 end
return redis.call('LPUSH', KEYS[1], ARGV[2])
"""


def _events_key(request_id: str) -> str:
    return f"{PREFIX}out:{request_id}"


def _flag_key(kind: str, name: str) -> str:
    return f"{PREFIX}{kind}:{name}"


class RedisWire:
    def __init__(self, url: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url)

    def push(self, raw: str, bound: int) -> bool:
        return self.redis.eval(_PUSH_BOUNDED, 1, QUEUE, bound, raw) != -1

    def take(self, room: int, block_s: float) -> list[bytes]:
        if not block_s:
            return self.redis.rpop(QUEUE, room) or []
        popped = self.redis.brpop([QUEUE], timeout=block_s)
        return [popped[1]] if popped else []

    def remove(self, raw: str) -> bool:
        return bool(self.redis.lrem(QUEUE, 1, raw))

    def length(self) -> int:
        return self.redis.llen(QUEUE)

    def flag(self, kind: str, name: str, ttl_s: float) -> None:
        self.redis.set(_flag_key(kind, name), 1, px=int(ttl_s * 1000))

    def unflag(self, kind: str, name: str) -> None:
        self.redis.delete(_flag_key(kind, name))

    def flagged(self, kind: str, names: list[str]) -> list[bool]:
        if not names:
            return []
        return [bool(v) for v in self.redis.mget([_flag_key(kind, n) for n in names])]

    def publish(self, events: dict[str, list[Event]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for request_id, batch in events.items():
            key = _events_key(request_id)
            for event in batch:
                pipe.xadd(key, {"e": json.dumps(event)})
            pipe.expire(key, EVENTS_TTL_S)
        pipe.execute()

    def read(self, request_id: str, after: str, block_s: float) -> list[tuple[str, Event]]:
        key = _events_key(request_id)
        reply = self.redis.xread({key: after or "0-0"}, block=int(block_s * 1000))
        return [(i.decode(), json.loads(f[b"e"])) for i, f in (reply[0][1] if reply else [])]

    def prune(self) -> None:
        """Redis expires keys itself."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, raw TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, rid TEXT NOT NULL, e TEXT NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_rid ON events (rid, seq);
CREATE TABLE IF NOT EXISTS flags (key TEXT PRIMARY KEY, until REAL NOT NULL);
"""


class SqliteWire:
    def __init__(self, path: str) -> None:
        self.path = path
        self.local = threading.local()  # sqlite3 connections are per thread and process

    def _db(self) -> sqlite3.Connection:
        db = getattr(self.local, "db", None)
        if db is None or self.local.pid != os.getpid():
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a power cut may lose answers in flight
            db.executescript(_SCHEMA)
            self.local.db, self.local.pid = db, os.getpid()
        return db

    def _write(self, *statements: tuple[str, tuple[Any, ...]]) -> list[tuple[list[Any], int]]:
        """Run `statements` in one transaction; each one's (rows returned, rows changed)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            done = []
            for sql, args in statements:
                cursor = db.execute(sql, args)
                done.append((cursor.fetchall(), cursor.rowcount))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return done

    def push(self, raw: str, bound: int) -> bool:
        insert = "INSERT INTO queue (raw) SELECT ? WHERE (SELECT count(*) FROM queue) < ?"
        return self._write((insert, (raw, bound)))[0][1] == 1

    def take(self, room: int, block_s: float) -> list[str]:
        until, waiting = time.monotonic() + block_s, "SELECT EXISTS (SELECT 1 FROM queue)"
        take = (
            "DELETE FROM queue WHERE seq IN (SELECT seq FROM queue ORDER BY seq LIMIT ?)"
            " RETURNING seq, raw"
        )
        while True:
            if self._db().execute(waiting).fetchone()[0]:  # polled by a read: no write lock
                taken = self._write((take, (room,)))[0][0]
                if taken:
                    return [raw for _seq, raw in sorted(taken)]
            if time.monotonic() >= until:
                return []
            time.sleep(POLL_S)

    def remove(self, raw: str) -> bool:
        return self._write(("DELETE FROM queue WHERE raw = ?", (raw,)))[0][1] > 0

    def length(self) -> int:
        return self._db().execute("SELECT count(*) FROM queue").fetchone()[0]

    def flag(self, kind: str, name: str, ttl_s: float) -> None:
        upsert = "INSERT OR REPLACE INTO flags (key, until) VALUES (?, ?)"
        self._write((upsert, (_flag_key(kind, name), time.time() + ttl_s)))

    def unflag(self, kind: str, name: str) -> None:
        self._write(("DELETE FROM flags WHERE key = ?", (_flag_key(kind, name),)))

    def flagged(self, kind: str, names: list[str]) -> list[bool]:
        keys, now = [_flag_key(kind, n) for n in names], time.time()
        marks = ",".join("?" * len(keys))
        rows = self._db().execute(
            f"SELECT key FROM flags WHERE until > ? AND key IN ({marks})",  # noqa: S608 - only ?s
            (now, *keys),
        )
        found = {key for (key,) in rows}
        return [key in found for key in keys]

    def publish(self, events: dict[str, list[Event]]) -> None:
        now, insert = time.time(), "INSERT INTO events (rid, e, at) VALUES (?, ?, ?)"
        rows = [(rid, json.dumps(e), now) for rid, batch in events.items() for e in batch]
        if rows:
            self._write(*[(insert, row) for row in rows])

    def read(self, request_id: str, after: str, block_s: float) -> list[tuple[str, Event]]:
        until = time.monotonic() + block_s
        select = "SELECT seq, e FROM events WHERE rid = ? AND seq > ? ORDER BY seq"
        while True:
            rows = self._db().execute(select, (request_id, int(after or 0))).fetchall()
            if rows or time.monotonic() >= until:
                return [(str(seq), json.loads(e)) for seq, e in rows]
            time.sleep(POLL_S)

    def prune(self) -> None:
        now = time.time()
        self._write(
            ("DELETE FROM events WHERE at < ?", (now - EVENTS_TTL_S,)),
            ("DELETE FROM flags WHERE until < ?", (now,)),
        )


Wire = RedisWire | SqliteWire


def connect(url: str) -> Wire:
    if url.startswith("sqlite:///"):
        return SqliteWire(url.removeprefix("sqlite:///"))  # as SQLAlchemy: 4 slashes, absolute
    return RedisWire(url)
