"""The local judge backend: a chat model run by finetune_core, the offline default.

Free text (`complete`) serves the MT-Bench parse path, as an API judge would.
With `constrained` (the default), `verdicts` writes an optional rationale and
then picks the verdict from the model's probabilities over the allowed labels
(see constrained.py), so every verdict it returns is parseable and says how sure
the model was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from finetune_core.evaluate.constrained import VerdictOptions, constrained_verdicts, cut_rationale
from finetune_core.evaluate.endpoint import Budget, OnDone, Reply

# The rationale ends where the judge starts writing a verdict itself ("[[A]]"); the verdict
# is then scored over the allowed labels, so the rest would be wasted tokens.
RATIONALE_STOP = ("[[",)


def _error(exc: Exception) -> Reply:
    return Reply(status="error", error=f"{type(exc).__name__}: {exc}"[:500])


class LocalBackend:
    """A chat model run by finetune_core: the offline default judge."""

    def __init__(
        self,
        chat: Any,
        batch_size: int = 4,
        budget: Budget | None = None,
        constrained: bool = True,
    ) -> None:
        self.chat, self.batch_size, self.constrained = chat, batch_size, constrained
        self.budget = budget or Budget()  # only max_calls applies: local calls cost nothing
        self.calls = 0

    def _admit(self, conversations: Sequence[Any]) -> tuple[list[str], list[Any]]:
        allowed = [self.budget.reserve(0.0) for _ in conversations]
        return allowed, [c for c, ok in zip(conversations, allowed, strict=True) if ok == "ok"]

    def complete(
        self,
        conversations: Sequence[list[dict[str, str]]],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        seed: int | None = None,
        on_done: OnDone | None = None,
    ) -> list[Reply]:
        """Free-text replies; `on_done(n)` after each batch of n (see endpoint.OnDone)."""
        allowed, todo = self._admit(conversations)
        replies: list[Reply] = []
        for chunk in self._chunks(todo):
            replies += self._generate(chunk, max_tokens, temperature, seed)
            if on_done is not None:
                on_done(len(chunk))
        done = iter(replies)
        return [next(done) if ok == "ok" else Reply(status=ok) for ok in allowed]

    def verdicts(
        self,
        conversations: Sequence[list[dict[str, str]]],
        options: VerdictOptions,
        *,
        rationale_tokens: int = 0,
        temperature: float = 0.0,
        seed: int | None = None,
        on_done: OnDone | None = None,
    ) -> list[Reply]:
        """A constrained verdict per conversation, after up to rationale_tokens of rationale;
        `on_done(n)` after each batch of n verdicts (see endpoint.OnDone)."""
        allowed, todo = self._admit(conversations)
        done = iter(self._verdicts(todo, options, rationale_tokens, temperature, seed, on_done))
        return [next(done) if ok == "ok" else Reply(status=ok) for ok in allowed]

    def _chunks(self, conversations: list) -> list[list]:
        step = self.batch_size
        return [list(conversations[i : i + step]) for i in range(0, len(conversations), step)]

    def _generate(
        self,
        conversations: list,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        stop: tuple[str, ...] = (),
    ) -> list[Reply]:
        from finetune_core.infer import generate

        out: list[Reply] = []
        for chunk in self._chunks(conversations):
            self.calls += len(chunk)
            try:
                gens = generate(
                    self.chat,
                    chunk,
                    max_new_tokens=max_tokens,
                    temperature=temperature,
                    seed=seed,
                    stop=stop,
                )
                out += [
                    Reply(
                        g.text, "ok", "", g.prompt_tokens, g.completion_tokens, g.finish_reason, 1
                    )
                    for g in gens
                ]
            except (RuntimeError, ValueError) as exc:
                out += [_error(exc)] * len(chunk)
        return out

    def _verdicts(
        self,
        conversations: list,
        options: VerdictOptions,
        rationale_tokens: int,
        temperature: float,
        seed: int | None,
        on_done: OnDone | None = None,
    ) -> list[Reply]:
        out: list[Reply] = []
        for chunk in self._chunks(conversations):
            out += self._verdict_batch(chunk, options, rationale_tokens, temperature, seed)
            if on_done is not None:
                on_done(len(chunk))
        return out

    def _verdict_batch(
        self,
        chunk: list,
        options: VerdictOptions,
        rationale_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> list[Reply]:
        # A failed rationale stays that conversation's error.
        if rationale_tokens > 0:
            # The judge's own "[[" verdict ends the rationale.
            texts = self._generate(chunk, rationale_tokens, temperature, seed, RATIONALE_STOP)
        else:
            self.calls += len(chunk)
            texts = [Reply() for _ in chunk]
        ok = [n for n, r in enumerate(texts) if r.status == "ok"]
        try:
            picked = constrained_verdicts(
                self.chat,
                [chunk[n] for n in ok],
                options,
                [cut_rationale(texts[n].text) for n in ok],
                batch_size=self.batch_size,
            )
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory: record, go on
            return [texts[n] if texts[n].status != "ok" else _error(exc) for n in range(len(chunk))]
        for n, v in zip(ok, picked, strict=True):
            r = texts[n]
            texts[n] = Reply(
                v.text,
                "ok",
                "",
                r.prompt_tokens,
                r.completion_tokens,
                "constrained",
                1,
                choice=v.label,
                probabilities=v.probabilities,
                constrained=True,
            )
        return texts
