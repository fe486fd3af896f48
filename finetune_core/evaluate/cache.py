"""On-disk answer cache (SQLite): adding a candidate never regenerates the others.

The key hashes the candidate's identity (model, adapter content hash or endpoint),
the prompt and the decoding settings. Only successful answers are stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA = """CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY, candidate TEXT, item_id TEXT, text TEXT,
    prompt_tokens INTEGER, completion_tokens INTEGER, finish_reason TEXT,
    created REAL)"""


def answer_key(candidate_key: str, messages: list[dict[str, str]], decoding: dict[str, Any]) -> str:
    text = json.dumps([candidate_key, messages, decoding], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def default_cache_path() -> Path:
    from finetune_core.models.registry import cache_dir

    return Path(cache_dir()) / "eval" / "answers.sqlite"


class AnswerCache:
    """path=None: the shared cache under FINETUNE_CORE_CACHE; ":memory:" keeps nothing."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else str(default_cache_path())
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute(SCHEMA)
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(keys)
        found: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):  # stay under SQLite's variable limit
            chunk = keys[i : i + 500]
            rows = self._db.execute(
                "SELECT key, text, prompt_tokens, completion_tokens, finish_reason FROM answers"
                f" WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            for key, text, pt, ct, fr in rows:
                found[key] = {
                    "text": text,
                    "prompt_tokens": pt,
                    "completion_tokens": ct,
                    "finish_reason": fr,
                }
        return found

    def put_many(self, rows: Iterable[tuple[str, str, str, dict[str, Any]]]) -> None:
        """rows: (key, candidate label, item id, answer dict)."""
        now = time.time()
        self._db.executemany(
            "INSERT OR REPLACE INTO answers (key, candidate, item_id, text, prompt_tokens,"
            " completion_tokens, finish_reason, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    k,
                    c,
                    i,
                    a["text"],
                    a["prompt_tokens"],
                    a["completion_tokens"],
                    a["finish_reason"],
                    now,
                )
                for k, c, i, a in rows
            ],
        )
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()
