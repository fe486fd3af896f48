"""Training's progress events: what each step, eval and checkpoint reports through the
engine's hooks (finetune_core/contracts/hooks.py), and the CLI's bar that shows them."""

from __future__ import annotations

import resource
import sys
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

EventKind = Literal["start", "step", "eval", "checkpoint", "done", "cancelled"]


@dataclass
class ProgressEvent:
    kind: EventKind
    step: int
    total_steps: int
    train_loss: float | None = None
    val_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    peak_memory_bytes: int | None = None
    epoch: float | None = None
    message: str = ""
    # DPO and SimPO: rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies
    # (val_ prefixed on an eval event), flattened into to_dict() beside the loss.
    metrics: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        flat = {k: v for k, v in asdict(self).items() if v is not None and k != "metrics"}
        return flat | (self.metrics or {})


def peak_memory_bytes() -> int:
    """Peak accelerator memory on CUDA, else the process's peak resident set."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


class TqdmBar:
    """The CLI's progress bar, as Hooks.progress: loss, learning rate, throughput and ETA
    (info is the ProgressEvent's dict)."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, phase: str, step: int, total: int | None, info: dict[str, Any]) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True)
        kind = info.get("kind")
        if kind == "step":
            self.bar.n = step
            self.bar.set_postfix(
                loss=f"{info['train_loss']:.4f}",
                lr=f"{info['learning_rate']:.2e}",
                tok_s=f"{info['tokens_per_s']:.0f}",
                refresh=False,
            )
            self.bar.refresh()
        elif kind in ("eval", "checkpoint", "cancelled"):
            self.bar.write(info.get("message", ""))
        if kind in ("done", "cancelled"):
            self.bar.close()
