"""Export a finished run on a worker: merged weights, GGUF or the portable adapter
(finetune_core.export.export_run), as a job on the GPU queue.

The run's manifest and final adapter are read where the store keeps them (in place on a
local store; fetched into scratch from object storage); progress and cancel go through the
engine's hooks into the Job; the export is staged by the engine and renamed into place, or,
on object storage, uploaded under the run's key + exports/FORMAT-TYPE with export.json
last. A failure or a cancel leaves no export files, and only then are its files recorded."""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path, PurePosixPath
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from finetune_core.contracts.hooks import Stopped
from finetune_core.contracts.layout import ADAPTER, EXPORT_MANIFEST, MANIFEST
from webapp.core import storage
from webapp.exports.models import Export
from webapp.exports.selectors import export_source_key
from webapp.exports.services import export_replace_older, export_succeed
from webapp.jobs import queue
from webapp.jobs.services import job_fail, job_start
from workers import services_bridge
from workers.celery import app
from workers.reporter import Event, Line, Reporter, event
from workers.workspace import make_room, scratch_root

log = logging.getLogger(__name__)


def exporting(name: str, info: dict[str, Any]) -> Event:
    """Hooks.phase of an export: a job event when it starts."""
    what = info["format"] if info["format"] == "adapter" else f"{info['format']} {info['type']}"
    return event(
        f"Exporting as {what}",
        {"kind": "export", "format": info["format"], "type": info["type"]},
    )


def stage(phase: str, current: int, total: int | None, info: dict[str, Any]) -> Line:
    """Hooks.progress of an export: its percent and stage on the job's bar (every new
    stage is written at once)."""
    name = str(info.get("stage", phase))
    return Line(current, total or 100, name, key=name)


def _fetch_source(source: str, folder: Path) -> Path:
    """The run's manifest and final adapter from object storage: all an export reads."""
    storage.get_tree(storage.join(source, ADAPTER), folder / ADAPTER)
    storage.get_file(storage.join(source, MANIFEST), folder / MANIFEST)
    return folder


def _publish(export: Export, out: Path) -> None:
    """Upload the export folder under its key, export.json last (present means complete);
    an upload that fails part way is removed again."""
    storage.delete_tree(export.key)  # what an earlier export (now replaced) left there
    try:
        storage.put_tree(export.key, out, last=[EXPORT_MANIFEST])
    except BaseException:
        storage.delete_tree(export.key)
        raise
    log.info("export %s stored under %s", export.pk, export.key)


def _remove(export: Export, out: Path | None) -> None:
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    else:
        storage.delete_tree(export.key)


def export_job(export: Export, job_id: int, task_id: str) -> None:
    """Write the export and record its files, or fail the job saying why."""
    from finetune_core.export import export_run

    source = export_source_key(run=export.run)
    if not source:
        job_fail(job_id=job_id, error="The run or its output folder is gone.")
        return
    n_prompts = settings.EXPORT_MEASURE_PROMPTS
    hooks = Reporter(job_id, task_id, line=stage, phase=exporting).hooks()
    local_run, local_out = storage.local_path(source), storage.local_path(export.key)
    scratch = scratch_root() / "runs" / f"export-{export.pk}"
    try:
        if local_run is None:  # object storage: work in scratch, then upload
            make_room(keep=scratch)
            shutil.rmtree(scratch, ignore_errors=True)
            # Named as the stored folder, so the files are named the same on every store.
            local_run = _fetch_source(source, scratch / PurePosixPath(source).name)
            out = scratch / "out" / PurePosixPath(export.key).name
        else:
            out = local_out
        manifest = export_run(
            local_run, fmt=export.format, type_=export.type, out=out, hooks=hooks,
            measure=n_prompts > 0, n_prompts=max(1, n_prompts),
        )  # fmt: skip
        export_replace_older(export_id=export.pk)  # their folder is this one's from now on
        if local_out is None:
            _publish(export, out)
        if export_succeed(export_id=export.pk, manifest=manifest) is None:
            _remove(export, local_out)  # cancelled at the very end: no files without a record
    except Stopped:
        log.info("export %s stopped", export.pk)  # the job is cancelled already (or taken over)
    except SoftTimeLimitExceeded:
        job_fail(job_id=job_id, error="The export took too long and was stopped.")
    except Exception as exc:  # noqa: BLE001 - every failure must land on the job
        job_fail(job_id=job_id, error=failure_message(exc))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def failure_message(exc: Exception) -> str:
    """The engine's own message for what a person can fix; a full disk names this worker."""
    if services_bridge.disk_full(exc):
        return (
            f"Worker {socket.gethostname()}: its disk is full ({exc}). Free space on it, then "
            "export again; nothing of this export was kept."
        )
    if services_bridge.is_user_error(exc):
        return str(exc)
    log.exception("export failed")
    return f"{type(exc).__name__}: {exc}"


@app.task(
    bind=True,
    name=queue.EXPORT_RUN,
    soft_time_limit=2 * 60 * 60,
    time_limit=2 * 60 * 60 + 120,
)
def export_run_task(self: Task, export_id: int, job_id: int) -> None:
    task_id = self.request.id or ""
    export = Export.objects.select_related("run__cell", "job").filter(pk=export_id).first()
    if export is None:  # its run was deleted meanwhile (the job outlives it)
        job_fail(job_id=job_id, error="The run was deleted before it was exported.")
        return
    if export.job.is_finished:
        return
    if job_start(job_id=job_id, celery_task_id=task_id) is None:
        return  # cancelled, finished, or failed after too many deliveries
    export_job(export, job_id, task_id)
