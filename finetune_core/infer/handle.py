"""What a caller of the engine holds: a request and its handle (text deltas as they come,
then OpenAI-style usage and finish_reason)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from queue import SimpleQueue
from typing import TYPE_CHECKING

from finetune_core.infer.generate import Generation

if TYPE_CHECKING:
    from finetune_core.infer.engine import Engine


@dataclass
class Request:
    messages: Sequence[object] | None = None  # chat messages (Message or {"role", "content"})
    prompt: str | None = None  # or raw text, no chat template
    adapter: str | None = None  # a loaded adapter's name; None: the base model
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = ()


class Handle:
    """One request's progress: iterate it for text deltas; at the end `usage` and
    `finish_reason` ("stop", "length"; "cancelled" after `cancel`)."""

    def __init__(self, engine: Engine, request: Request, prompt_ids: list[int]) -> None:
        self.engine, self.request, self.prompt_ids = engine, request, prompt_ids
        self.text = ""  # streamed so far (the answer once done)
        self.token_ids: list[int] = []  # the answer's tokens (end of turn left out)
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.submitted_at = time.perf_counter()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.cancelled = False
        self._deltas: SimpleQueue[str | None] = SimpleQueue()
        self._ended = False  # the end was read from _deltas

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    @property
    def usage(self) -> dict[str, int]:
        prompt = len(self.prompt_ids)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": self.completion_tokens,
            "total_tokens": prompt + self.completion_tokens,
        }

    def __iter__(self) -> Iterator[str]:
        """Text deltas as they come; steps the engine itself unless its thread runs."""
        while not self._ended:
            while self._deltas.empty() and not self.engine.running:
                self.engine.step()
            delta = self._deltas.get()
            if delta is None:
                self._ended = True
                if self.error is not None:
                    raise self.error
                return
            yield delta

    def result(self) -> Generation:
        for _ in self:
            pass
        return Generation(
            text=self.text,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=self.completion_tokens,
            finish_reason=self.finish_reason or "cancelled",
        )
