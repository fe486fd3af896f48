"""OpenAI-compatible chat endpoints: concurrency, our own retries, timeout, limits, budget.

The SDK's retries are off (max_retries=0) so the policy lives here and is tested
against a real HTTP server: 429 and 5xx are retried with exponential backoff
(honouring Retry-After), other 4xx are not, and each request has a timeout.

Where it may connect is the egress policy's (finetune_core/contracts/egress.py): the base
URL is checked when the Endpoint is made and each connection's peer address when it is
connected (egress_http.py). A failed call records a short summary, never the body.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from finetune_core.contracts.egress import EgressPolicy
from finetune_core.evaluate.egress_http import checked_client, error_summary

# A backend's completion callback: called with the number of conversations just finished
# (a local batch, or one endpoint reply from one of its threads). An exception it raises
# (e.g. Stopped) ends the call: unstarted endpoint requests are cancelled.
OnDone = Callable[[int], None]


class Tally:
    """A running count across threads, reported as (done, total) after each addition, in
    order (so reports never go down)."""

    def __init__(self, total: int, report: Callable[[int, int], None], done: int = 0) -> None:
        self.total, self.report, self.done = total, report, done
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            self.report(self.done, self.total)


@dataclass
class Reply:
    """One chat completion or why there is none."""

    text: str = ""
    # ok | error | timeout | skipped_budget | skipped_limit
    status: str = "ok"
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    attempts: int = 0
    # Set by a constrained local judge: the verdict label it chose and the
    # probabilities of every allowed label (see evaluate/constrained.py).
    choice: str = ""
    probabilities: dict[str, float] | None = None
    constrained: bool = False


@dataclass
class Budget:
    """Caps on calls and spend, shared by threads.

    Before a call its worst-case cost (prompt estimated at 4 characters a token,
    plus max_tokens of completion) is reserved; after it, the reservation is
    replaced by the cost from `usage`. A call whose reservation would pass the cap
    is not made: it becomes skipped_budget, so the cap is never exceeded.
    """

    max_cost: float | None = None  # in the currency of the prices; None: no cap
    price_prompt_1k: float = 0.0  # per 1,000 prompt tokens
    price_completion_1k: float = 0.0
    max_calls: int | None = None  # prompts sent (retries of one prompt count once)
    spent: float = 0.0
    reserved: float = 0.0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    exhausted: bool = False  # once a call is refused for money, every later one is too
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.price_prompt_1k + completion_tokens * self.price_completion_1k
        ) / 1000

    def reserve(self, estimate: float) -> str:
        """ "ok", or the skip status when this call may not be made."""
        with self._lock:
            if self.max_calls is not None and self.calls >= self.max_calls:
                return "skipped_limit"
            over = self.max_cost is not None and (
                self.spent + self.reserved + estimate > self.max_cost
            )
            if self.exhausted or over:
                self.exhausted = True
                return "skipped_budget"
            self.calls += 1
            self.reserved += estimate
            return "ok"

    def settle(self, estimate: float, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            self.reserved -= estimate
            self.spent += self.cost(prompt_tokens, completion_tokens)
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_cost": self.max_cost,
            "spent": round(self.spent, 6),
            "calls": self.calls,
            "max_calls": self.max_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def retry_after(headers: Any) -> float | None:
    """Seconds from retry-after-ms or Retry-After (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    try:
        if ms is not None:
            return max(float(ms) / 1000, 0.0)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError):
        return None  # a header we cannot read: fall back to our own backoff
    return max(when.timestamp() - time.time(), 0.0)


@dataclass
class Endpoint:
    base_url: str
    model: str
    api_key: str = field(default="none", repr=False)
    timeout: float = 60.0
    max_attempts: int = 4  # tries per prompt on 429/5xx/timeouts
    backoff: float = 1.0  # first wait; doubles each retry
    max_backoff: float = 30.0
    concurrency: int = 4
    budget: Budget = field(default_factory=Budget)
    # Default: public addresses only; the operator's allow-list comes from the caller.
    egress: EgressPolicy = field(default_factory=EgressPolicy)

    def __post_init__(self) -> None:
        import openai

        self.egress.check_url(self.base_url)  # EgressRefused: a clear error before any call
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            max_retries=0,
            timeout=self.timeout,
            http_client=checked_client(self.egress),
        )

    def _wait(self, attempt: int, exc: Exception) -> float:
        hinted = retry_after(getattr(getattr(exc, "response", None), "headers", None))
        if hinted is not None:
            return min(hinted, self.max_backoff)
        base = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        return base * (0.5 + random.random() / 2)  # jitter: spread out synchronised retries

    def _call(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Reply:
        import openai

        retryable = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError)
        reply = Reply()
        for attempt in range(1, self.max_attempts + 1):
            reply.attempts = attempt
            try:
                resp = self._client.chat.completions.create(
                    model=self.model, messages=messages, **params
                )
                choice = resp.choices[0]
                usage = resp.usage
                return Reply(
                    text=choice.message.content or "",
                    prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                    completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                    finish_reason=choice.finish_reason or "",
                    attempts=attempt,
                )
            except retryable as exc:
                timeout = isinstance(exc, openai.APITimeoutError)
                reply.status = "timeout" if timeout else "error"
                reply.error = error_summary(exc)
                if attempt < self.max_attempts:
                    time.sleep(self._wait(attempt, exc))
            except openai.APIError as exc:  # not retryable here: 4xx, refused, unreachable
                reply.status, reply.error = "error", error_summary(exc)
                return reply
            except (AttributeError, IndexError, TypeError, ValueError) as exc:
                reply.status = "error"
                reply.error = f"{type(exc).__name__}: the reply is not a chat completion"
                return reply
        return reply

    def estimate(self, messages: list[dict[str, str]], max_tokens: int) -> float:
        """Worst-case cost of a call: ~4 characters a prompt token, the whole max_tokens."""
        return self.budget.cost(sum(len(m["content"]) for m in messages) // 4 + 8, max_tokens)

    def complete_one(
        self, messages: list[dict[str, str]], max_tokens: int = 512, **params: Any
    ) -> Reply:
        estimate = self.estimate(messages, max_tokens)
        status = self.budget.reserve(estimate)
        if status != "ok":
            return Reply(status=status)
        reply = self._call(messages, {"max_tokens": max_tokens, **params})
        self.budget.settle(estimate, reply.prompt_tokens, reply.completion_tokens)
        return reply

    def complete(
        self,
        conversations: Sequence[list[dict[str, str]]],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float | None = None,
        seed: int | None = None,
        on_done: OnDone | None = None,
    ) -> list[Reply]:
        """One reply per conversation, in order; `on_done(1)` after each (see OnDone)."""
        params: dict[str, Any] = {"temperature": temperature}
        if top_p is not None and top_p < 1:
            params["top_p"] = top_p
        if seed is not None:
            params["seed"] = seed

        def one(c: list[dict[str, str]]) -> Reply:
            reply = self.complete_one(c, max_tokens, **params)
            if on_done is not None:
                on_done(1)
            return reply

        with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
            futures = [pool.submit(one, c) for c in conversations]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:  # a stop (or any failure): send no more requests
                    f.cancel()
                raise
