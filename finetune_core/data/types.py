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
