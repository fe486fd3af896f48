"""How a caller (the notebook's worker) watches a Trans-LoRA step and stops it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Progress = Callable[[str, int, int | None, dict[str, Any]], None]


def _no_progress(phase: str, current: int, total: int | None, info: dict[str, Any]) -> None:
    pass


@dataclass
class Hooks:
    """How a caller (the notebook's worker) watches and stops a transfer.

    progress(phase, current, total, info): phases are "generate" (candidates sampled of the
    budget; info: accepted, rate), "teacher" (inputs answered), "train" (student steps),
    "evaluate" (examples scored); info names the model or student.
    """

    progress: Progress = _no_progress
    should_stop: Callable[[], bool] = lambda: False


class TransferStopped(Exception):
    """should_stop said stop; `partial` holds what was done (phase times, synthesis, ...)."""

    def __init__(self, phase: str, partial: dict[str, Any]) -> None:
        super().__init__(f"stopped during {phase}")
        self.phase, self.partial = phase, partial
