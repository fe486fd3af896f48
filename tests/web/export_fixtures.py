"""Finished runs and finished exports laid out in storage as a worker leaves them, for the
export tests that run no worker (views, access, API)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from webapp.core import storage
from webapp.exports.models import Export
from webapp.exports.services import export_create, export_succeed
from webapp.jobs.services import job_start, job_succeed
from webapp.projects.artifacts import run_key
from webapp.projects.models import CellRun, RunStatus

ADAPTER_BYTES = b"not really safetensors" * 100


def finish_finetune(run: CellRun, *, base_model: str = "tiny-llama") -> CellRun:
    """A succeeded fine-tune with its manifest and final adapter in storage."""
    key = run_key(run.job_id)
    out = storage.local_path(key)
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_model.safetensors").write_bytes(ADAPTER_BYTES)
    (out / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    (out / "manifest.json").write_text(json.dumps({"base_model": base_model}))
    job_start(job_id=run.job_id)
    inputs = {**run.inputs, "base_model": base_model}
    CellRun.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED,
        inputs=inputs,
        outputs={"output_dir": key, "adapter_dir": f"{key}/adapter", "final": "last"},
    )
    job_succeed(job_id=run.job_id)
    return CellRun.objects.select_related("cell__project__team", "job").get(pk=run.pk)


def describe(name: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def finished_export(
    run: CellRun, by: Any, *, fmt: str = "adapter", files: dict[str, bytes] | None = None
) -> Export:
    """An export the way the worker finishes one: its folder written, then recorded."""
    files = files or {"adapter_model.safetensors": ADAPTER_BYTES, "adapter_config.json": b"{}"}
    export = export_create(run=run, format=fmt, by=by)
    job_start(job_id=export.job_id)
    folder = storage.local_path(export.key)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    manifest = {
        "format": fmt,
        "type": export.type,
        "run": str(storage.local_path(run.outputs["output_dir"])),
        "warnings": [f"kept the local base {folder}"],
        "seconds": 1.5,
        "files": [describe(n, d) for n, d in files.items()],
    }
    (folder / "export.json").write_text(json.dumps(manifest))
    assert export_succeed(export_id=export.pk, manifest=manifest) is not None
    return Export.objects.select_related("job").get(pk=export.pk)
