"""Writes for exports: queue one (checked here, before any worker is asked), and what the
worker reports when its files are stored. Each export is a Job on the GPU queue, sent by
name once the transaction commits (webapp.jobs.dispatch)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from finetune_core.contracts.layout import EXPORT_FORMATS, EXPORT_MANIFEST, EXPORT_TYPES, MANIFEST
from webapp.core import storage
from webapp.exports.models import Export
from webapp.exports.selectors import (
    EXPORTABLE_KINDS,
    export_key,
    export_source_key,
    gguf_unsupported,
)
from webapp.jobs import queue
from webapp.jobs.dispatch import job_enqueue_on_commit
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.services import job_create, job_succeed
from webapp.projects.models import CellRun, RunStatus

KIND = "export"


def _refuse(field: str, message: str, code: str) -> ValidationError:
    return ValidationError({field: ValidationError(message, code=code)})


def export_check(*, run: CellRun, fmt: str, type_: str | None) -> tuple[str, str, str]:
    """(format, type, source key) for an export of `run`, or a ValidationError naming the
    field and saying what would work."""
    if run.cell.kind not in EXPORTABLE_KINDS:
        raise _refuse("run", "Only fine-tune and transfer runs can be exported.", "export_kind")
    if run.status != RunStatus.SUCCEEDED:
        raise _refuse(
            "run",
            f"Run v{run.version} of {run.cell} is {run.get_status_display().lower()}: only a "
            "finished (succeeded) run has a final adapter to export.",
            "export_unfinished_run",
        )
    if fmt not in EXPORT_FORMATS:
        raise _refuse(
            "format",
            f"Unknown export format {fmt!r}; choose {', '.join(EXPORT_FORMATS)}.",
            "export_bad_format",
        )
    types = EXPORT_TYPES[fmt]
    type_ = type_ or types[0]
    if type_ not in types:
        raise _refuse(
            "type",
            f"A {fmt} export has type {' or '.join(types)}, not {type_!r}.",
            "export_bad_type",
        )
    if fmt == "gguf" and (why := gguf_unsupported(base_model=run.inputs.get("base_model"))):
        raise _refuse("format", why, "export_unsupported_architecture")
    source = export_source_key(run=run)
    if not source or not storage.exists(storage.join(source, MANIFEST)):
        raise _refuse(
            "run",
            "This run's final adapter is not in storage (deleted, or the run never wrote one).",
            "export_no_adapter",
        )
    return fmt, type_, source


@transaction.atomic
def export_create(
    *, run: CellRun, format: str, type: str | None = None, by: AbstractBaseUser | None
) -> Export:
    """Queue an export of a finished run. One export of each (run, format, type) at a time;
    a later one replaces an earlier one's files once it finishes."""
    CellRun.objects.select_for_update().filter(pk=run.pk).first()  # one create at a time
    fmt, type_, source = export_check(run=run, fmt=format, type_=type)
    busy = Export.objects.filter(run=run, format=fmt, type=type_).exclude(
        job__status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]
    )
    if other := busy.first():
        raise _refuse(
            "format",
            f"This run is being exported as {other.label} already (export #{other.pk}); "
            "wait for it or cancel it.",
            "export_in_progress",
        )
    job = job_create(
        team=run.cell.project.team,
        kind=KIND,
        params={"cell_run_id": run.pk, "format": fmt, "type": type_},
        created_by=by,
    )
    export = Export.objects.create(
        run=run, format=fmt, type=type_, job=job, key=export_key(source, fmt, type_), created_by=by
    )
    job_enqueue_on_commit(job=job, task_path=queue.EXPORT_RUN, args=[export.pk, job.pk])
    return export


def export_replace_older(*, export_id: int) -> int:
    """The worker is about to write this export's folder: earlier finished exports of the
    same run, format and type (the same folder) are replaced by it. Returns how many."""
    export = Export.objects.get(pk=export_id)
    return (
        Export.objects.filter(
            run_id=export.run_id, format=export.format, type=export.type, pk__lt=export.pk
        )
        .filter(replaced_by__isnull=True, job__status=JobStatus.SUCCEEDED)
        .update(replaced_by=export, files=[])
    )


@transaction.atomic
def export_succeed(*, export_id: int, manifest: dict[str, Any]) -> Export | None:
    """The export's files are stored: record them (name, bytes, sha256) and the rest of its
    export.json, and settle its job, under the job's row lock. None when the job stopped
    meanwhile (cancelled): then nothing is recorded and the caller removes the files."""
    export = Export.objects.select_related("job").get(pk=export_id)
    job = Job.objects.select_for_update().get(pk=export.job_id)
    if job.status != JobStatus.RUNNING:
        return None
    files = [
        {"name": f["name"], "bytes": int(f["bytes"]), "sha256": f["sha256"]}
        for f in manifest["files"]
        if f["name"] != EXPORT_MANIFEST
    ]
    facts = {k: v for k, v in manifest.items() if k not in ("files", "run", "folder")}
    Export.objects.filter(pk=export_id).update(files=files, manifest=facts)
    total = sum(f["bytes"] for f in files)
    job_succeed(job_id=job.pk, result={"export": export_id, "files": len(files), "bytes": total})
    export.refresh_from_db()
    return export
