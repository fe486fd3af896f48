"""The one in-memory shape every dataset format is read into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    # 1: the loss is computed on this message (assistant messages only); 0: it is context.
    weight: int = 1


@dataclass(frozen=True)
class Example:
    messages: tuple[Message, ...]
    # 1-based line of the source file the example starts on (row number for CSV,
    # example index + 1 for BIG-bench task.json).
    line: int = 0
    # Accepted answers and choices kept from the source, for evaluation.
    references: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class PreferenceExample(Example):
    """A prompt with a preferred and a non-preferred answer (DPO, SimPO).

    `messages` holds the prompt then the preferred answer, so the pair splits, previews and
    counts like any Example; assistant turns inside the prompt carry weight 0 (context)."""

    rejected: Message = Message("assistant", "")

    @property
    def prompt(self) -> tuple[Message, ...]:
        return self.messages[:-1]

    @property
    def chosen(self) -> Message:
        return self.messages[-1]

    def with_rejected(self) -> Example:
        """The prompt followed by the non-preferred answer."""
        return Example((*self.prompt, self.rejected), line=self.line)
