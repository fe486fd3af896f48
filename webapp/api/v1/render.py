"""OpenAI object shapes for Tunebook rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from finetune_core.contracts.train import PREFERENCE_METRICS
from webapp.api.models import FineTuningJob
from webapp.api.v1.methods import method_object
from webapp.api.v1.selectors import (
    checkpoints,
    fine_tuned_model_id,
    model_succeeded,
    team_slug,
    trained_tokens,
)
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.jobs.models import EventLevel, Job, JobEvent, JobStatus
from webapp.projects.estimate import ESTIMATE
from webapp.projects.finetune_config import PRESETS, effective_hparams

MAX_DETAIL_ISSUES = 10
LEVELS = {EventLevel.DEBUG: "info", EventLevel.INFO: "info", EventLevel.WARNING: "warn"}


def epoch(when: datetime | None) -> int | None:
    return int(when.timestamp()) if when is not None else None


def _file_status(version: DatasetVersion) -> tuple[str, str | None]:
    if version.status == VersionStatus.VALID:
        return "processed", None
    if version.status != VersionStatus.INVALID:
        return "uploaded", None
    report = version.report or {}
    issues = [i for i in report.get("issues", []) if i.get("level", "error") == "error"]
    lines = [
        f"{i.get('where') or 'line'} {i['line']}: {i['message']} ({i['code']})"
        if i.get("line")
        else f"{i['message']} ({i['code']})"
        for i in issues[:MAX_DETAIL_ISSUES]
    ]
    if len(issues) > MAX_DETAIL_ISSUES:
        lines.append(f"... and {len(issues) - MAX_DETAIL_ISSUES} more problem(s)")
    return "error", "; ".join(lines) or report.get("error") or "The file did not pass validation."


def file_object(version: DatasetVersion) -> dict[str, Any]:
    """Files never expire, so `expires_at` is left out, as is `status_details` without
    details: OpenAI's schema allows a value or no field, never null."""
    status, details = _file_status(version)
    row = {
        "id": f"file-{version.pk}",
        "object": "file",
        "bytes": version.size,
        "created_at": epoch(version.created_at),
        "filename": version.original_name,
        "purpose": "fine-tune",
        "status": status,
    }
    return row if details is None else {**row, "status_details": details}


def job_status(ft: FineTuningJob) -> str:
    if ft.job is None:
        return "failed"
    if ft.job.status == JobStatus.CANCELLED and ft.paused_at is not None:
        return "paused"
    return str(ft.job.status)


def _hyperparameters(ft: FineTuningJob) -> dict[str, Any]:
    inputs = ft.cell_run.inputs if ft.cell_run else {}
    values = effective_hparams(inputs)
    preset = PRESETS.get(inputs.get("preset") or "", {}) or PRESETS["balanced"]
    return {
        "n_epochs": values["epochs"],
        "batch_size": values["batch_size"],
        "learning_rate_multiplier": round(values["learning_rate"] / preset["learning_rate"], 6),
    }


def _estimate(ft: FineTuningJob) -> dict[str, Any] | None:
    """The pre-flight estimate the job was queued with: the selectors' annotation, which
    spares decoding the job's params, else from them."""
    if hasattr(ft, "job_estimate"):
        return ft.job_estimate
    job = ft.job
    if job is None or "params" in job.get_deferred_fields():
        return None
    return (job.params or {}).get(ESTIMATE)


def _estimated_finish(job: Job | None, estimate: dict[str, Any] | None) -> int | None:
    """While the job runs: its start plus the time its pre-flight estimate gave."""
    seconds = (estimate or {}).get("seconds")
    if job is None or job.status != JobStatus.RUNNING or job.started_at is None or not seconds:
        return None
    return int(job.started_at.timestamp() + seconds)


def job_object(ft: FineTuningJob) -> dict[str, Any]:
    job, status = ft.job, job_status(ft)
    hyper = _hyperparameters(ft)
    error = None
    if job is not None and job.status == JobStatus.FAILED:
        error = {"code": "training_failed", "message": job.error, "param": None}
    run = ft.cell_run
    estimate = _estimate(ft)
    return {
        "object": "fine_tuning.job",
        "id": f"ftjob-{ft.pk}",
        "model": (ft.requested or {}).get("model") or ft.base_model,  # an ft: model as given
        "created_at": epoch(ft.created_at),
        "finished_at": epoch(job.finished_at) if job and status != "paused" else None,
        "fine_tuned_model": fine_tuned_model_id(ft) if model_succeeded(ft) else None,
        "organization_id": f"team-{ft.team_id}",
        "result_files": [],
        "status": status,
        "training_file": ft.training_file_ref,
        "validation_file": (ft.requested or {}).get("validation_file"),
        "hyperparameters": hyper,
        "method": method_object(run.inputs if run else {}, hyper),
        "trained_tokens": trained_tokens(ft),
        "error": error,
        "seed": ft.seed,
        "estimated_finish": _estimated_finish(job, estimate),
        "integrations": [],
        "metadata": ft.metadata or None,
        "user_provided_suffix": ft.suffix or None,
        "tunebook": {
            "team": team_slug(ft.team),
            "step": job.progress_current if job else 0,
            "total_steps": job.progress_total if job else None,
            "metrics": job.metrics if job else {},
            "config": {k: v for k, v in (run.inputs if run else {}).items() if v is not None},
            "run_id": run.pk if run else None,
            # Time (s) and memory (bytes) with their ranges, and what they are based on.
            "estimate": estimate,
        },
    }


# What a metrics event's message names, in order: the loss, then DPO's rewards and accuracy.
MESSAGE_METRICS = (
    ("train_loss", "training loss"),
    ("val_loss", "validation loss"),
    *((key, key) for key in PREFERENCE_METRICS),
    *((f"val_{key}", f"validation {key}") for key in PREFERENCE_METRICS),
)


def _metrics_message(data: dict[str, Any]) -> str:
    text = f"Step {data.get('step')}/{data.get('total_steps')}"
    parts = [
        f"{label}={data[key]:.4g}"
        for key, label in MESSAGE_METRICS
        if isinstance(data.get(key), int | float)
    ]
    return text + (": " + ", ".join(parts) if parts else "")


def event_object(event: JobEvent) -> dict[str, Any]:
    data = event.data or {}
    metrics = data.get("kind") in ("step", "eval")
    body: dict[str, Any] = dict(data)
    if metrics:
        body = {k: v for k, v in data.items() if k != "kind"}
        if "val_loss" in body:
            body["valid_loss"] = body["val_loss"]
    return {
        "object": "fine_tuning.job.event",
        "id": f"ftevent-{event.pk}",
        "created_at": epoch(event.created_at),
        "level": LEVELS.get(event.level, "error"),
        "message": _metrics_message(data) if metrics else event.message,
        "data": body,
        "type": "metrics" if metrics else "message",
    }


def checkpoint_objects(ft: FineTuningJob) -> list[dict[str, Any]]:
    """Newest first, as OpenAI lists them."""
    base = fine_tuned_model_id(ft)
    created = epoch(ft.job.finished_at if ft.job and ft.job.finished_at else ft.created_at)
    rows = []
    for point in sorted(checkpoints(ft), key=lambda c: -int(c["step"])):
        step = int(point["step"])
        rows.append(
            {
                "object": "fine_tuning.job.checkpoint",
                "id": f"ftckpt-{ft.pk}-{step}",
                "created_at": created,
                "fine_tuned_model_checkpoint": f"{base}:ckpt-step-{step}",
                "fine_tuning_job_id": f"ftjob-{ft.pk}",
                "step_number": step,
                "metrics": {
                    "step": step,
                    "train_loss": point.get("train_loss"),
                    "valid_loss": point.get("val_loss"),
                },
            }
        )
    return rows


def model_object(model_id: str, *, created: int | None, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created or 0, "owned_by": owned_by}
