"""Whether a run recomputes its activations in the backward pass (gradient checkpointing).

`gradient_checkpointing` is on, off, or auto. Recomputing each layer's forward pass
costs time (on a CPU, a SmolLM2-135M QLoRA step at 4 x 512 took 1.5x as long with it)
to keep only the layers' inputs; auto turns it off when the batch's activations, as
`activation_bytes` estimates them, take at most AUTO_SHARE of the memory the device has
free (the rest is left to the allocator's slack, other processes and the serving
engine beside the worker).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

# Floats a token keeps per layer for the backward pass without checkpointing, per unit of
# the hidden width (norm inputs and outputs, q, k, v before and after RoPE, attention's
# output, the residuals) and of the MLP's width (gate, up, their activation and product,
# down's input); activations are fp32 under k-bit training. SmolLM2-135M at 4 x 512 kept
# about 4 GiB more without checkpointing than with it (fp32, 2026-12-07); this gives 4.2.
FLOATS_PER_HIDDEN = 16
FLOATS_PER_INTERMEDIATE = 6
FLOAT_BYTES = 4
AUTO_SHARE = 0.25
CGROUP = Path("/sys/fs/cgroup")


def activation_bytes(model_config: Any, tokens: int) -> int:
    """Activations a batch of `tokens` keeps without checkpointing (an estimate)."""
    hidden = int(getattr(model_config, "hidden_size", 0) or 0)
    mlp = int(getattr(model_config, "intermediate_size", 0) or 4 * hidden)
    layers = int(getattr(model_config, "num_hidden_layers", 0) or 0)
    per_token = layers * (FLOATS_PER_HIDDEN * hidden + FLOATS_PER_INTERMEDIATE * mlp)
    return tokens * per_token * FLOAT_BYTES


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory on `device`: CUDA's free bytes; on a CPU the kernel's MemAvailable,
    capped by the container's cgroup limit. None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.M)
    available = int(found.group(1)) * 1024 if found else None
    known = [v for v in (available, _cgroup_headroom()) if v is not None]
    return min(known) if known else None


def _cgroup_headroom() -> int | None:
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        used = int((CGROUP / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def use_checkpointing(cfg: Any, model: torch.nn.Module) -> bool:
    """What `cfg.gradient_checkpointing` means for this model on its device."""
    if cfg.gradient_checkpointing != "auto":
        return cfg.gradient_checkpointing == "on"
    free = free_memory_bytes(next(model.parameters()).device)
    # DPO and SimPO run a pair's two answers through one forward pass: twice the rows.
    rows = cfg.batch_size * (2 if cfg.preference else 1)
    need = activation_bytes(model.config, rows * cfg.max_length)
    return free is None or need > AUTO_SHARE * free
