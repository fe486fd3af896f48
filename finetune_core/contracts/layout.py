"""A run folder's layout, and its manifest's reader: the one description of where a
training or transfer run keeps its files, for the engine that writes them and for the web
app and workers that find and read them.

    <run>/manifest.json                          written last: the run is complete
    <run>/adapter/                               the final PEFT adapter
    <run>/checkpoints/step-000050/               resumable; complete once trainer_state.json is
    <run>/transfer/seeds.jsonl                   Trans-LoRA: the k real examples kept
    <run>/discriminator/discriminator.json       Trans-LoRA: the trained discriminator
    <transfer run>/transferred/                  the transferred adapter (a run folder itself)
    <transfer run>/report.json                   the transfer's report
    <run>/exports/gguf-q8_0/                      an export (finetune_core.export); any --out
    <export>/export.json                         the export's manifest, written last
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADAPTER = "adapter"
# PEFT's files in an adapter folder; the weights are written last.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
MANIFEST = "manifest.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "step-"
TRAINER_STATE = "trainer_state.json"  # a checkpoint's last file: present means complete
SEEDS_DIR = "transfer"  # the seeds and the discriminator's training data
SEEDS_FILE = "seeds.jsonl"
SEEDS = Path(SEEDS_DIR) / SEEDS_FILE
DISCRIMINATOR_DIR = "discriminator"
DISCRIMINATOR = Path(DISCRIMINATOR_DIR) / "discriminator.json"
TRANSFERRED = "transferred"
TRANSFER_REPORT = "report.json"
EXPORTS = "exports"
EXPORT_MANIFEST = "export.json"
EXPORT_FORMATS = ("merged", "gguf", "adapter")
# The types each format writes, the default first.
EXPORT_TYPES = {
    "merged": ("bf16", "f16"),
    "gguf": ("f16", "q8_0", "q4_0"),
    "adapter": ("as-trained",),
}
# The architectures the GGUF writer knows, as the model catalog names them: Hugging Face's
# model_type (the keys of finetune_core.export.gguf_arch.ARCHITECTURES) or, for a model
# registered from a GGUF file, its general.architecture (each entry's gguf_name);
# tests/core/test_export_contract.py keeps them equal, so the web app can refuse a GGUF
# export before queueing it.
GGUF_ARCHITECTURES = ("llama", "gemma3_text", "gemma3")


def checkpoint_dir(run: str | Path, step: int) -> Path:
    return Path(run) / CHECKPOINTS / f"{CHECKPOINT_PREFIX}{step:06d}"


def export_dir(run: str | Path, fmt: str, type_: str) -> Path:
    """Where an export goes when no folder is given: inside the run."""
    return Path(run) / EXPORTS / f"{fmt}-{type_}"


def checkpoint_step(folder: str | Path) -> int:
    """The step a checkpoint folder holds (`step-000050` -> 50)."""
    return int(Path(folder).name.removeprefix(CHECKPOINT_PREFIX))


def is_transferable(run: str | Path) -> bool:
    """The run kept what Trans-LoRA needs: its seeds and a trained discriminator."""
    return (Path(run) / SEEDS).is_file() and (Path(run) / DISCRIMINATOR).is_file()


@dataclass(frozen=True)
class Manifest:
    """What a finished run says about itself (finetune_core.train.outputs writes it)."""

    data: dict[str, Any]

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.data.get("hyperparameters", {})

    @property
    def trained_tokens(self) -> int | None:
        """Tokens trained on: tokens per row times the rows seen (steps x batch x accum)."""
        try:
            data, hyper = self.data["data"], self.hyperparameters
            rows_seen = self.data["metrics"]["steps"] * hyper["batch_size"] * hyper["grad_accum"]
            per_row = data["train_tokens"] / max(1, data["n_train_rows"])
        except (TypeError, KeyError):
            return None
        return round(per_row * rows_seen)


def parse_manifest(text: str | bytes) -> Manifest | None:
    """A manifest from its bytes (read from a folder or an object store); None if unreadable."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return Manifest(data) if isinstance(data, dict) else None


def read_manifest(run: str | Path | None) -> Manifest | None:
    """The run's manifest, or None when it has none (yet) or it cannot be read."""
    if not run:
        return None
    try:
        return parse_manifest((Path(run) / MANIFEST).read_bytes())
    except OSError:
        return None
