"""What a run leaves behind: PEFT adapter folders and the run manifest (never pickle)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from finetune_core.contracts.layout import ADAPTER, ADAPTER_FILES, ADAPTER_WEIGHTS, MANIFEST
from finetune_core.errors import FinetuneError
from finetune_core.train.checkpoint import atomic_dir, checkpoint_dir, list_checkpoints

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from finetune_core.train.config import TrainConfig


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write through a temporary file and rename, so a kill or a full disk never leaves half
    a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


def save_adapter(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """A standard PEFT folder (adapter_config.json + adapter_model.safetensors) plus the
    tokenizer with its chat template, so the adapter is usable on its own."""
    with atomic_dir(folder) as out:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("finetune_core", "tunebook", "torch", "transformers", "peft", "bitsandbytes"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    versions.setdefault("torch", torch.__version__)
    return versions


def select_final(output_dir: str | Path, which: str) -> Path:
    """Make `which` ("last", "best" or a checkpoint step number) the run's final adapter."""
    out = Path(output_dir)
    if which in ("last", "best"):
        source = out / which
    elif which.isdigit():
        source = checkpoint_dir(out, int(which))
    else:
        raise FinetuneError(f"final adapter must be 'last', 'best' or a step number, not {which!r}")
    if not (source / ADAPTER_WEIGHTS).exists():
        steps = [p.name for p in list_checkpoints(out)]
        raise FinetuneError(f"{source} holds no adapter; available: last, best, {', '.join(steps)}")
    with atomic_dir(out / ADAPTER) as staging:
        for name in ADAPTER_FILES:
            shutil.copy2(source / name, staging / name)
        for extra in source.iterdir():
            if extra.name.startswith("tokenizer") or extra.name in (
                "special_tokens_map.json",
                "chat_template.jinja",
            ):
                shutil.copy2(extra, staging / extra.name)
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        manifest["final"] = which
        write_json(manifest_path, manifest)
    return out / ADAPTER


def write_manifest(
    cfg: TrainConfig, out: Path, *, final: str, data_info: dict[str, Any], result: dict[str, Any]
) -> None:
    manifest = {
        "base_model": cfg.model,
        "method": cfg.method,
        "hyperparameters": cfg.to_dict(),
        "data": data_info,
        "library_versions": library_versions(),
        "metrics": {
            "steps": result["steps"],
            "train_loss": result["train_loss"],
            "best_val_loss": result["best_val_loss"],
            "best_step": result["best_step"],
        },
        "history": result["history"],
        "final": final,
    }
    # The adapter first: select_final would otherwise rewrite the manifest just written.
    select_final(out, final)
    write_json(out / MANIFEST, manifest)
