"""How a caller watches and stops a long engine call: train, transfer and evaluate alike.

Torch-free, so a worker (or the CLI) can build its hooks without loading the engine.

- `phase(name, info)`: a phase starts (evaluate: "answers" per candidate, "metrics",
  "judging", "grading"; train, DPO only: "reference", before the first step, info =
  the pairs whose reference log-probabilities it computes; info says what it will do,
  e.g. cached and to-generate counts);
- `progress(phase, current, total, info)`: work done in that phase (train: steps, info =
  the ProgressEvent's dict; transfer: "generate", "teacher", "train", "evaluate";
  evaluate: answers or judgments finished, counted per batch). May be called from an
  endpoint's threads; `current` never goes down within a phase;
- `should_stop()`: asked between batches; True ends the call with `Stopped` (training
  instead saves a checkpoint and returns its "cancelled" result, as its CLI expects).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Progress = Callable[[str, int, int | None, dict[str, Any]], None]
Phase = Callable[[str, dict[str, Any]], None]


def _no_progress(phase: str, current: int, total: int | None, info: dict[str, Any]) -> None:
    pass


def _no_phase(name: str, info: dict[str, Any]) -> None:
    pass


def _never() -> bool:
    return False


class Stopped(Exception):
    """should_stop said stop during `phase`; `partial` holds what was done so far."""

    def __init__(self, phase: str, partial: dict[str, Any] | None = None) -> None:
        super().__init__(f"stopped during {phase}")
        self.phase, self.partial = phase, partial or {}


@dataclass
class Hooks:
    """Progress, phase and stop callbacks; every one optional."""

    progress: Progress = _no_progress
    should_stop: Callable[[], bool] = _never
    phase: Phase = _no_phase

    def check(self, phase: str, partial: dict[str, Any] | None = None) -> None:
        """Raise Stopped when should_stop says so (called between batches)."""
        if self.should_stop():
            raise Stopped(phase, partial)
