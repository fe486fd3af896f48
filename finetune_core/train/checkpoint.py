"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint holds the adapter, the optimizer and scheduler states, every RNG
state and the step (the data position derives from it). Each is written into a
temporary folder that is renamed into place, so a kill mid-save leaves the
previous checkpoint intact and never a half-written one; a full disk likewise, and
`disk_full_reported` turns it into a DiskFull that says what to do.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from finetune_core.contracts.layout import (
    ADAPTER_WEIGHTS,
    CHECKPOINT_PREFIX,
    CHECKPOINTS,
    TRAINER_STATE,
    checkpoint_dir,
    checkpoint_step,
)
from finetune_core.errors import DiskFull, FinetuneError

__all__ = [
    "checkpoint_dir",
    "disk_full_reported",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "save_checkpoint",
]


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a staging folder that replaces `target` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; workers and the web app share outputs
    try:
        yield staging
        if target.exists():
            old = target.with_name(f".{target.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _split_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state -> (flat tensors, JSON). Keys are `<param index>.<name>`."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            key = f"{idx}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                plain[key] = value
    return tensors, {"plain": plain, "param_groups": state["param_groups"]}


def _join_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["plain"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    plain = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, plain


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, state, gauss = plain["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    folder: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    trainer_state: dict[str, Any],
) -> None:
    with atomic_dir(folder) as out:
        model.save_pretrained(out, safe_serialization=True)
        opt_tensors, opt_meta = _split_state(optimizer.state_dict())
        save_file(opt_tensors, out / "optimizer.safetensors")
        rng_tensors, rng_plain = rng_state()
        save_file(rng_tensors, out / "rng.safetensors")
        state = {
            "step": step,
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
            "rng": rng_plain,
            **trainer_state,
        }
        (out / TRAINER_STATE).write_text(json.dumps(state, indent=1))


def load_checkpoint(
    folder: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore everything saved; returns the trainer state (step, metrics, ...)."""
    from peft.utils import set_peft_model_state_dict

    adapter = load_file(folder / ADAPTER_WEIGHTS)
    result = set_peft_model_state_dict(model, adapter)
    if getattr(result, "unexpected_keys", None):
        raise RuntimeError(
            f"checkpoint {folder} has weights this model lacks: {result.unexpected_keys[:3]}"
        )
    state = json.loads((folder / TRAINER_STATE).read_text())
    optimizer.load_state_dict(
        _join_state(load_file(folder / "optimizer.safetensors"), state["optimizer"])
    )
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(load_file(folder / "rng.safetensors"), state["rng"])
    return state


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (staging folders start with a dot)."""
    root = output_dir / CHECKPOINTS
    if not root.exists():
        return []
    done = [p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / TRAINER_STATE).exists()]
    return sorted(done, key=checkpoint_step)


def prune_checkpoints(output_dir: Path, *, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints (0 keeps all). The best
    adapter lives in its own folder, so it outlives its checkpoint."""
    if keep > 0:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


# A write refused for want of space: an OSError's errno, or (safetensors' writer raises an
# error of its own) the OS's words for it in the message.
DISK_FULL_MARKERS = {
    code: (f"os error {code}", os.strerror(code)) for code in (errno.ENOSPC, errno.EDQUOT)
}


def disk_full_errno(exc: BaseException) -> int | None:
    """ENOSPC or EDQUOT when `exc`, or what it was raised from, is a write refused for want
    of space; None otherwise."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in DISK_FULL_MARKERS:
            return cause.errno
        for code, markers in DISK_FULL_MARKERS.items():
            if any(marker in str(cause) for marker in markers):
                return code
        cause = cause.__cause__ or cause.__context__
    return None


def _size(n: float) -> str:
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            break
    return f"{n:.1f} {unit}"


@contextmanager
def disk_full_reported(output_dir: Path, doing: str) -> Iterator[None]:
    """Turn a write refused for want of space inside the block into DiskFull: which folder,
    the space left there, what a checkpoint takes, and what to do. What the block was
    writing is already gone (atomic_dir), so the run resumes from its last checkpoint."""
    try:
        yield
    except FinetuneError:
        raise
    except Exception as exc:
        code = disk_full_errno(exc)
        if code is None:
            raise
        raise disk_full_error(output_dir, doing, code) from exc


def disk_full_error(output_dir: Path, doing: str, code: int = errno.ENOSPC) -> DiskFull:
    try:
        free = f"{_size(shutil.disk_usage(output_dir).free)} free there"
    except OSError:
        free = "free space unknown"
    saved = list_checkpoints(output_dir)
    if saved:
        size = sum(f.stat().st_size for f in saved[-1].rglob("*") if f.is_file())
        free += f", a checkpoint takes about {_size(size)}"
        kept = f"the checkpoint at step {checkpoint_step(saved[-1])} is complete"
        then = f"it continues from step {checkpoint_step(saved[-1])}"
    else:
        kept = "there is no complete checkpoint yet"
        then = "it starts from step 0"
    if code == errno.ENOSPC:
        head, advice = f"The disk holding {output_dir} is full", "Free space on that disk"
    else:
        head, advice = f"The disk quota for {output_dir} is used up", "Free space or raise it"
    return DiskFull(
        f"{head} ({os.strerror(code)}) while {doing}: {free}. Nothing half-written was kept "
        f"and {kept}. {advice}, then resume the run: {then}.",
        code="disk_full",
    )
