"""The OpenAI-compatible client and the judge against a real HTTP server on loopback,
through the real `openai` SDK: retries, Retry-After, timeouts, garbage, limits, budget,
and the answer cache (counted in requests the server received)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from finetune_core.contracts.egress import EgressPolicy
from finetune_core.data.types import Message
from finetune_core.evaluate import (
    AnswerCache,
    Budget,
    Candidate,
    Decoding,
    Endpoint,
    Judge,
    generate_answers,
    make_item,
    pair_summary,
)
from finetune_core.evaluate.endpoint import retry_after
from finetune_core.evaluate.sets import EvalSet


def completion(content: str, prompt_tokens: int = 100, completion_tokens: int = 20) -> bytes:
    return json.dumps(
        {
            "id": "cmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content},
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    ).encode()


def prefer_longer(body: dict) -> str:
    """A deterministic judge: the longer answer wins, whichever position it is in."""
    text = body["messages"][-1]["content"]
    a = re.search(r"Assistant A's Answer\]\n(.*?)\n\[The End", text, re.S)
    b = re.search(r"Assistant B's Answer\]\n(.*?)\n\[The End", text, re.S)
    if not (a and b):
        return f"An answer to: {text[:40]}"
    la, lb = len(a.group(1)), len(b.group(1))
    return "Comparing...\n" + ("[[A]]" if la > lb else "[[B]]" if lb > la else "[[C]]")


class Loopback:
    """An OpenAI-compatible /v1/chat/completions server in a thread.

    `script` holds (status, headers, body, delay) answers for the next requests;
    when it is empty the server answers 200 with respond(request body).
    """

    def __init__(
        self, respond: Callable[[dict], str] = prefer_longer, host: str = "127.0.0.1"
    ) -> None:
        self.script: deque = deque()
        self.requests: list[dict] = []
        self.respond = respond
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                status, headers, payload, delay = (
                    server.script.popleft() if server.script else (200, {}, None, 0)
                )
                if payload is None:
                    payload = completion(server.respond(body))
                time.sleep(delay)
                try:
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://{host}:{self.httpd.server_address[1]}/v1"
        # The operator's allow-list for this judge on loopback (the on-premises case).
        self.egress = EgressPolicy.parse(f"{host}:{self.httpd.server_address[1]}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Loopback()
    yield s
    s.close()


def endpoint(server: Loopback, **kw) -> Endpoint:
    opts = {"timeout": 5.0, "backoff": 0.01, "max_attempts": 3, "concurrency": 1,
            "egress": server.egress, **kw}  # fmt: skip
    return Endpoint(server.url, "judge-model", "test-key", **opts)


MSG = [{"role": "user", "content": "hi"}]


def test_429_honours_retry_after_then_succeeds(server: Loopback) -> None:
    server.script.append((429, {"Retry-After": "1"}, b'{"error": {"message": "slow down"}}', 0))
    start = time.perf_counter()
    (reply,) = endpoint(server).complete([MSG])
    assert reply.status == "ok" and reply.attempts == 2 and len(server.requests) == 2
    assert time.perf_counter() - start >= 0.95  # waited as told, not the 0.01 s backoff
    assert server.requests[0]["model"] == "judge-model"


def test_500_is_retried_then_succeeds(server: Loopback) -> None:
    server.script.append((500, {}, b'{"error": {"message": "boom"}}', 0))
    server.script.append((503, {}, b"unavailable", 0))
    (reply,) = endpoint(server).complete([MSG])
    assert reply.status == "ok" and reply.attempts == 3 and reply.prompt_tokens == 100


def test_retries_run_out_and_4xx_is_not_retried(server: Loopback) -> None:
    server.script.extend([(500, {}, b"{}", 0)] * 3)
    (reply,) = endpoint(server).complete([MSG])
    assert reply.status == "error" and reply.attempts == 3 and "InternalServerError" in reply.error
    server.script.append((400, {}, b'{"error": {"message": "bad request"}}', 0))
    (reply,) = endpoint(server).complete([MSG])
    assert reply.status == "error" and reply.attempts == 1 and len(server.requests) == 4


def test_slow_response_is_a_timeout(server: Loopback) -> None:
    server.script.append((200, {}, None, 3.0))
    start = time.perf_counter()
    (reply,) = endpoint(server, timeout=0.3, max_attempts=1).complete([MSG])
    assert reply.status == "timeout" and time.perf_counter() - start < 2.5


def test_retry_after_forms() -> None:
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None and retry_after(None) is None


def pair_set() -> tuple[EvalSet, dict]:
    items = [make_item([Message("user", f"question {i}")], category="c") for i in range(3)]
    es = EvalSet("t", items)
    from finetune_core.evaluate import Answer

    answers = {
        "long": {it.id: Answer("a much longer answer") for it in items},
        "short": {it.id: Answer("short") for it in items},
    }
    return es, answers


def test_garbage_is_retried_once_then_recorded(server: Loopback) -> None:
    es, answers = pair_set()
    es = es.head(1)
    # Order AB: not JSON at all, twice. Order BA: no verdict, then a verdict.
    server.script.append((200, {}, b"<html>oops</html>", 0))
    server.script.append((200, {}, completion("I cannot decide."), 0))
    server.script.append((200, {}, b"not json {", 0))
    (result,) = Judge(endpoint(server, max_attempts=1)).compare(es, answers)
    assert len(server.requests) == 4  # two orders, each retried once
    assert result.ab.status == "error" and result.ab.attempts == 2
    assert result.ba.status == "ok" and result.ba.value == "B"  # "long" was shown second
    assert result.outcome == "error" and result.prompt_version.startswith("pairwise@")


def test_consistent_and_position_biased_judges(server: Loopback) -> None:
    es, answers = pair_set()
    results = Judge(endpoint(server, concurrency=4)).compare(es, answers)
    assert [r.outcome for r in results] == ["a"] * 3 and not any(r.inconsistent for r in results)
    server.respond = lambda body: "[[A]]"  # always the first answer
    results = Judge(endpoint(server, concurrency=4)).compare(es, answers)
    assert all(r.outcome == "tie" and r.inconsistent for r in results)
    (row,) = pair_summary(results, n_boot=50)
    assert row["consistency"] == 0.0 and row["win_rate"] == 0.5


def test_endpoint_judge_reports_each_reply_and_a_stop_sends_no_more(server: Loopback) -> None:
    es, answers = pair_set()
    seen: list[tuple[int, int]] = []
    results = Judge(endpoint(server, concurrency=4)).compare(
        es, answers, on_progress=lambda done, total: seen.append((done, total))
    )
    # One report per reply, from the endpoint's threads, in order: never backwards.
    assert seen == [(n, 6) for n in range(7)] and len(results) == 3

    class Stop(Exception):
        pass

    def stop_at_two(done: int, total: int) -> None:
        if done == 2:
            raise Stop

    server.requests.clear()
    server.script.extend([(200, {}, None, 0.0), (200, {}, None, 0.0)])
    server.script.extend([(200, {}, None, 0.3)] * 4)  # slower: the stop comes first
    with pytest.raises(Stop):
        Judge(endpoint(server, concurrency=1)).compare(es, answers, on_progress=stop_at_two)
    time.sleep(0.5)
    assert len(server.requests) <= 3  # the queued requests were never sent


def test_max_prompts_limit(server: Loopback) -> None:
    es, answers = pair_set()
    ep = endpoint(server, budget=Budget(max_calls=2))
    results = Judge(ep).compare(es, answers)
    assert len(server.requests) == 2
    assert [r.outcome for r in results] == ["a", "skipped_limit", "skipped_limit"]


def test_budget_cap_stops_cleanly(server: Loopback) -> None:
    es, answers = pair_set()
    # Each call really costs 100 prompt + 20 completion tokens at 1.0 per 1K = 0.12.
    # Before a call its worst case (estimated prompt + all 50 max_tokens) is reserved.
    budget = Budget(max_cost=0.6, price_prompt_1k=1.0, price_completion_1k=1.0)
    ep = endpoint(server, budget=budget)
    results = Judge(ep, max_tokens=50).compare(es, answers)
    made = len(server.requests)
    assert 0 < made < 6 and budget.calls == made and budget.exhausted
    assert budget.spent == pytest.approx(0.12 * made) and budget.spent <= 0.6
    # It stopped because the next call could have passed the cap.
    (template, fields) = (
        Judge(ep)._pair_template(()),
        {
            "question": "question 0",
            "answer_a": "a much longer answer",
            "answer_b": "short",
            "reference": "",
        },
    )
    assert budget.spent + ep.estimate(template.messages(**fields), 50) > 0.6
    statuses = [s for r in results for s in (r.ab.status, r.ba.status)]
    assert statuses == ["ok"] * made + ["skipped_budget"] * (6 - made)
    assert results[-1].outcome == "skipped_budget"


def test_answer_cache_hits_make_no_requests(server: Loopback, tmp_path) -> None:
    es, _ = pair_set()
    cache = AnswerCache(tmp_path / "answers.sqlite")
    api = Candidate("openai", "model-1", base_url=server.url, api_key="k")

    def answers(cands: list[Candidate], max_new_tokens: int = 16) -> dict:
        dec = Decoding(max_new_tokens=max_new_tokens)
        opts = {"egress": server.egress}
        return generate_answers(cands, es, decoding=dec, cache=cache, endpoint_options=opts)

    first = answers([api])
    assert len(server.requests) == 3 and not any(a.cached for a in first[api.label].values())
    # A new process (new cache object, same file): nothing regenerated.
    cache = AnswerCache(tmp_path / "answers.sqlite")
    again = answers([api])
    assert len(server.requests) == 3 and all(a.cached for a in again[api.label].values())
    assert {i: a.text for i, a in again[api.label].items()} == {
        i: a.text for i, a in first[api.label].items()
    }
    # Adding a candidate generates only its answers; other decoding settings miss.
    other = Candidate("openai", "model-2", base_url=server.url, label="two")
    answers([api, other])
    assert len(server.requests) == 6
    answers([api], max_new_tokens=17)
    assert len(server.requests) == 9


def test_failed_answers_are_not_cached(server: Loopback, tmp_path) -> None:
    es, _ = pair_set()
    es = es.head(1)
    cache = AnswerCache(tmp_path / "a.sqlite")
    api = Candidate("openai", "m", base_url=server.url)
    server.script.append((401, {}, b'{"error": {"message": "no key"}}', 0))
    got = generate_answers(
        [api], es, cache=cache, endpoint_options={"max_attempts": 1, "egress": server.egress}
    )
    assert next(iter(got[api.label].values())).status == "error" and len(cache) == 0


def test_single_answer_grading(server: Loopback) -> None:
    es, answers = pair_set()
    server.respond = lambda body: "Helpful. Rating: [[7]]"
    grades = Judge(endpoint(server, concurrency=4)).grade(es.head(2), answers)
    assert [g.rating for g in grades] == [7.0] * 4
    assert all(g.prompt_version.startswith("single@") for g in grades)
