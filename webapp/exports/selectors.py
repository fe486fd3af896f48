"""Reads for exports: where a run's exportable adapter and its exports are stored, what
the Export panel offers, and the files of a finished export.

Folders come from the engine's torch-free layout contract (finetune_core.contracts.layout)
and the base model's architecture from the model catalog, so the web app never loads the
engine to say what it can export."""

from __future__ import annotations

from typing import Any

from finetune_core.contracts.layout import (
    EXPORT_FORMATS,
    EXPORT_MANIFEST,
    EXPORT_TYPES,
    GGUF_ARCHITECTURES,
    TRANSFERRED,
    export_dir,
)
from webapp.core import storage
from webapp.core.catalog import model_type
from webapp.exports.models import Export
from webapp.projects.models import CellRun
from webapp.projects.run_outputs import outputs_of

EXPORTABLE_KINDS = ("finetune", "transfer")
FORMAT_LABELS = {
    "merged": "Merged weights (Hugging Face folder)",
    "gguf": "GGUF (llama.cpp, Ollama, LM Studio)",
    "adapter": "Portable adapter (PEFT)",
}


def export_source_key(*, run: CellRun) -> str | None:
    """The storage key of the run folder an export reads (manifest + final adapter): a
    fine-tune's own folder, a transfer's transferred adapter folder."""
    out = getattr(outputs_of(run), "output_dir", None)
    if not out or run.cell.kind not in EXPORTABLE_KINDS:
        return None
    return out if run.cell.kind == "finetune" else storage.join(out, TRANSFERRED)


def export_key(source: str, fmt: str, type_: str) -> str:
    """Where an export of `source` is stored: the engine's own RUN/exports/FORMAT-TYPE."""
    return storage.join(export_dir(source, fmt, type_).as_posix())


def gguf_unsupported(*, base_model: str | None) -> str | None:
    """Why the GGUF writer cannot take this base model (naming what it can), or None."""
    arch = model_type(base_model or "")
    if arch is None or arch in GGUF_ARCHITECTURES:
        return None  # an unknown model: the worker's engine decides, with the same message
    return (
        f"The GGUF writer does not know the {arch} architecture of {base_model}; it supports "
        f"{', '.join(GGUF_ARCHITECTURES)}. Merged and adapter exports work for any architecture."
    )


def export_choices(*, run: CellRun) -> list[dict[str, Any]]:
    """The formats the Export panel offers for this run, each with its types (default
    first) and, where it cannot be chosen, why."""
    base = run.inputs.get("base_model")
    return [
        {
            "format": fmt,
            "label": FORMAT_LABELS.get(fmt, fmt),
            "types": list(EXPORT_TYPES[fmt]),
            "unavailable": gguf_unsupported(base_model=base) if fmt == "gguf" else None,
        }
        for fmt in EXPORT_FORMATS
    ]


def run_exports(*, run: CellRun) -> list[Export]:
    return list(Export.objects.filter(run=run).select_related("job", "created_by"))


def export_panel(*, run: CellRun) -> dict[str, Any]:
    """What the run page's Export panel shows."""
    exports = run_exports(run=run)
    return {
        "exportable": run.cell.kind in EXPORTABLE_KINDS,
        "finished": run.status == "succeeded",
        "choices": export_choices(run=run),
        "exports": exports,
        "active": any(e.is_active for e in exports),
    }


def export_file_key(*, export: Export, name: str) -> str | None:
    """The storage key of one file a finished export recorded (None for any other name)."""
    if not export.is_ready or name not in {f["name"] for f in export.files}:
        return None
    return storage.join(export.key, name)


def export_zip_files(*, export: Export) -> list[tuple[str, str]]:
    """(storage key, name in the zip) for a finished export: every file, export.json last."""
    if not export.is_ready:
        return []
    folder = export.key.rsplit("/", 1)[-1]
    names = [f["name"] for f in export.files] + [EXPORT_MANIFEST]
    return [(storage.join(export.key, n), f"{folder}/{n}") for n in names]
