"""`export_run`: check the request, then write one export into a staging folder that is
renamed into place when complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_core.contracts.hooks import Hooks
from finetune_core.contracts.layout import EXPORT_FORMATS, EXPORT_TYPES, export_dir
from finetune_core.export.common import (
    PHASE,
    ExportError,
    ExportRecord,
    Reporter,
    finished_run,
    staged,
)


def check_request(fmt: str, type_: str | None) -> str:
    """The type to write (the format's default when none is given), or a clear error."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(
            f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}",
            code="export_bad_format",
        )
    types = EXPORT_TYPES[fmt]
    if type_ is None:
        return types[0]
    if type_ not in types:
        raise ExportError(
            f"a {fmt} export has type {', '.join(types)}, not {type_!r}", code="export_bad_type"
        )
    return type_


def export_run(
    run: str | Path,
    *,
    fmt: str,
    type_: str | None = None,
    out: str | Path | None = None,
    hooks: Hooks | None = None,
    measure: bool = True,
    n_prompts: int = 50,
) -> dict[str, Any]:
    """Export a finished run; returns the export's manifest (also written as export.json).

    The engine's hooks: phase("export", ...) once, then progress("export", percent, 100,
    {"stage": ...}); should_stop() is asked between stages and raises Stopped, leaving no
    files. `measure` compares a merged export with the model as trained on `n_prompts`
    prompts."""
    type_ = check_request(fmt, type_)
    source = finished_run(run)
    hooks = hooks or Hooks()
    hooks.phase(PHASE, {"format": fmt, "type": type_, "run": str(source.folder)})
    reporter = Reporter(hooks)
    target = Path(out) if out else export_dir(source.folder, fmt, type_)
    record = ExportRecord(source, fmt, type_)
    if fmt == "gguf":  # before any work: an architecture or a type the writer cannot do
        from finetune_core.export.gguf_export import check_gguf

        check_gguf(source, type_)
    with staged(target) as staging:
        if fmt == "merged":
            _merged(source, staging, type_, record, reporter, measure, n_prompts)
        elif fmt == "gguf":
            from finetune_core.export.gguf_export import write_gguf_export

            write_gguf_export(source, staging, type_, record=record, hooks=reporter)
        else:
            from finetune_core.export.adapter import write_adapter

            write_adapter(source, staging, record=record, hooks=reporter)
        reporter.report("hashing the files", 0.95)
        manifest = record.finish(staging)
    hooks.progress(PHASE, 100, 100, {"stage": "done"})  # renamed: too late to stop
    return {**manifest, "folder": str(target)}


def _merged(
    source: Any, staging: Path, type_: str, record: ExportRecord, hooks: Reporter,
    measure: bool, n_prompts: int,
) -> None:  # fmt: skip
    from finetune_core.export.fidelity import measure as measure_fidelity
    from finetune_core.export.fidelity import warnings_for
    from finetune_core.export.merged import merged_facts, run_tokenizer, write_merged

    model = write_merged(source, staging, dtype=type_, record=record, hooks=hooks)
    record.facts.update(merged_facts(model))
    if measure:
        figures = measure_fidelity(source, model, run_tokenizer(source), hooks, n_prompts=n_prompts)
        record.facts["fidelity"] = figures
        record.warnings.extend(warnings_for(figures))
