"""Which NF4 path this process takes, and why: what a worker checks and reports at start.

compiled-cuda  tunebook's CUDA kernels (csrc/cuda), on a GPU
compiled-cpu   tunebook's CPU kernels (csrc/cpu)
bitsandbytes   bitsandbytes' own kernels: asked for, or on a GPU whose CUDA kernels
               failed (the Linear4bit patch then leaves CUDA layers to bitsandbytes)
reference      the pure-PyTorch reference (kernels/reference.py): asked for, or on a
               CPU whose kernels failed
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from finetune_core.kernels import ops

LABELS = {
    "compiled-cuda": "compiled CUDA kernels",
    "compiled-cpu": "compiled CPU kernels",
    "bitsandbytes": "bitsandbytes' own kernels",
    "reference": "pure-PyTorch reference",
}
# Where each device goes when its compiled kernels fail (see the module doc).
FALLBACK = {"cuda": "bitsandbytes", "cpu": "reference"}


@dataclass(frozen=True)
class NF4Path:
    path: str  # a key of LABELS
    device: str  # "cuda" or "cpu"
    backend: str  # TUNEBOOK_NF4_BACKEND as read
    problem: str = ""  # why the compiled kernels are not in use, when they were wanted

    @property
    def fell_back(self) -> bool:
        return bool(self.problem)

    def describe(self) -> str:
        text = f"{LABELS[self.path]} ({self.path}) on {self.device}"
        if self.backend != "auto":
            text += f", TUNEBOOK_NF4_BACKEND={self.backend}"
        return text


def nf4_path() -> NF4Path:
    """Builds or loads the kernels for this machine's device (a GPU when torch sees one) and
    says which path NF4 layers take. Raises ValueError for an unknown TUNEBOOK_NF4_BACKEND."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = ops.backend()
    if name in ("reference", "bitsandbytes"):
        return NF4Path(name, device, name)
    loaded = ops.load_cuda_extension() if device == "cuda" else ops.load_extension()
    if loaded:
        return NF4Path(f"compiled-{device}", device, name)
    problem = ops.load_failure(device) or "the kernels did not load"
    return NF4Path(FALLBACK[device], device, name, problem)
