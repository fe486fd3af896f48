"""What every export shares: the run it starts from, the staging folder it writes into,
the engine's hooks (finetune_core.contracts.hooks) a worker passes, and the export's own
manifest."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune_core.contracts.hooks import Hooks
from finetune_core.contracts.layout import (
    ADAPTER,
    ADAPTER_WEIGHTS,
    EXPORT_MANIFEST,
    MANIFEST,
    read_manifest,
)
from finetune_core.errors import FinetuneError
from finetune_core.train.checkpoint import atomic_dir
from finetune_core.train.outputs import file_sha256, write_json

PHASE = "export"  # the one phase an export reports, in percent


class ExportError(FinetuneError):
    pass


@dataclass
class Reporter:
    """An export's stages through the engine's hooks: progress("export", percent, 100,
    {"stage": ...}); a stop asked for between stages raises Stopped."""

    hooks: Hooks = field(default_factory=Hooks)

    def report(self, stage: str, fraction: float) -> None:
        percent = round(100 * min(1.0, max(0.0, fraction)))
        self.hooks.progress(PHASE, percent, 100, {"stage": stage})
        self.hooks.check(PHASE)


@dataclass(frozen=True)
class FinishedRun:
    """A run that finished: its folder, manifest and final adapter."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def adapter(self) -> Path:
        return self.folder / ADAPTER

    @property
    def base_model(self) -> str:
        return self.manifest["base_model"]

    @property
    def quantization(self) -> str:
        return self.manifest.get("hyperparameters", {}).get("quantization", "nf4")


def finished_run(run: str | Path) -> FinishedRun:
    """The run, or a clear error when it has not finished (no manifest yet)."""
    folder = Path(run)
    if not folder.is_dir():
        raise ExportError(f"no run folder at {folder}", code="export_no_run")
    manifest = read_manifest(folder)
    if manifest is None or "base_model" not in manifest.data:
        raise ExportError(
            f"{folder} has no {MANIFEST}: the run has not finished, so there is no final "
            "adapter to export yet",
            code="export_unfinished_run",
        )
    if not (folder / ADAPTER / ADAPTER_WEIGHTS).is_file():
        raise ExportError(
            f"{folder} has a manifest but no {ADAPTER}/ folder", code="export_no_adapter"
        )
    return FinishedRun(folder, manifest.data)


def describe_files(folder: Path) -> list[dict[str, Any]]:
    """Each file's name, size and sha256 (what a user checks after a download)."""
    return [
        {"name": p.name, "bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != EXPORT_MANIFEST
    ]


@dataclass
class ExportRecord:
    """The export's manifest (export.json), filled as the export goes."""

    run: FinishedRun
    fmt: str
    type: str
    started: float = field(default_factory=time.monotonic)
    facts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def finish(self, folder: Path) -> dict[str, Any]:
        data = {
            "format": self.fmt,
            "type": self.type,
            "run": str(self.run.folder.resolve()),
            "base_model": self.run.base_model,
            "method": self.run.manifest.get("method", "lora"),
            **self.facts,
            "warnings": self.warnings,
            "seconds": round(time.monotonic() - self.started, 2),
            "files": describe_files(folder),
        }
        write_json(folder / EXPORT_MANIFEST, data)
        return data


@contextmanager
def staged(out: str | Path) -> Iterator[Path]:
    """A hidden sibling folder renamed into `out` only when the export succeeds: a failure,
    a cancel or a full disk leaves no half-written export visible."""
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} is a file; give a folder for the export", code="export_out")
    if target.is_dir() and any(target.iterdir()) and not (target / EXPORT_MANIFEST).is_file():
        # Only an earlier export is replaced, never a folder of someone's other files.
        raise ExportError(
            f"{target} holds files that are not an export; choose an empty or new folder",
            code="export_out",
        )
    with atomic_dir(target) as staging:
        yield staging
