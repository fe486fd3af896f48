"""How a caller (the notebook's worker) watches a Trans-LoRA step and stops it: the
engine's one Hooks protocol (finetune_core.contracts.hooks), re-exported here.

Transfer's progress phases are "generate" (candidates sampled of the budget; info:
accepted, rate), "teacher" (inputs answered), "train" (student steps) and "evaluate"
(examples scored); info names the model or student.
"""

from __future__ import annotations

from finetune_core.contracts.hooks import Hooks, Progress, Stopped

__all__ = ["Hooks", "Progress", "TransferStopped"]


class TransferStopped(Stopped):
    """should_stop said stop; `partial` holds what was done (phase times, synthesis, ...)."""
