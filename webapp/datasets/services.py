"""Writes for datasets. Uploading under an existing name adds a version, never overwrites."""

from __future__ import annotations

import hashlib
import os

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Max
from django.utils.text import get_valid_filename

from webapp.datasets.models import (
    Dataset,
    DatasetFormat,
    DatasetPurpose,
    DatasetVersion,
    VersionStatus,
)
from webapp.jobs.dispatch import job_enqueue_on_commit
from webapp.jobs.services import job_create
from webapp.teams.models import Team

VALIDATE_TASK = "workers.tasks.validate_dataset_version"


def _sha256(upload: UploadedFile) -> str:
    known = getattr(upload, "sha256", None)
    if known:
        return known
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def dataset_version_create(
    *,
    team: Team,
    name: str,
    upload: UploadedFile,
    created_by: AbstractBaseUser,
    fmt: str = DatasetFormat.AUTO,
    preview_model: str = "",
    purpose: str = "",
) -> DatasetVersion:
    """Adds a version; a new name makes a dataset of `purpose` (blank: fine-tuning data).
    A new version keeps its dataset's purpose: a different one asked for is refused."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the dataset a name."})
    if len(name) > 100:
        raise ValidationError({"name": "Dataset names are at most 100 characters."})
    if purpose and purpose not in DatasetPurpose.values:
        raise ValidationError({"purpose": f"Unknown purpose {purpose!r}."})
    if fmt not in DatasetFormat.values:
        raise ValidationError({"format": f"Unknown format {fmt!r}."})
    if not upload.size:
        raise ValidationError({"file": "The file is empty."})
    sha256 = _sha256(upload)
    filename = get_valid_filename(os.path.basename(upload.name or "data")) or "data"
    with transaction.atomic():
        dataset, _ = Dataset.objects.get_or_create(
            team=team,
            name=name,
            defaults={"created_by": created_by, "purpose": purpose or DatasetPurpose.TRAINING},
        )
        # Lock the dataset row so two uploads cannot take the same version number.
        dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
        if purpose and purpose != dataset.purpose:
            # One dataset, one kind of file: mixed versions would break the cells using it.
            held = dataset.get_purpose_display().lower()
            raise ValidationError(
                {"purpose": f"“{name}” holds {held}; upload this file under another name."}
            )
        latest = dataset.versions.aggregate(n=Max("version"))["n"] or 0
        version = DatasetVersion(
            dataset=dataset,
            version=latest + 1,
            original_name=(upload.name or filename)[:255],
            size=upload.size,
            sha256=sha256,
            format=fmt,
            preview_model=preview_model,
            created_by=created_by,
        )
        version.file.save(filename, upload, save=False)
        try:
            version.save()
            job = job_create(
                team=team,
                kind="validate_dataset",
                params={"dataset_version_id": version.pk},
                created_by=created_by,
            )
            version.validation_job = job
            version.save(update_fields=["validation_job"])
            job_enqueue_on_commit(job=job, task_path=VALIDATE_TASK, args=[version.pk])
        except BaseException:
            version.file.delete(save=False)  # no row, no file
            raise
    return version


def dataset_version_mark(
    *,
    version_id: int,
    status: str,
    report: dict | None = None,
    n_examples: int | None = None,
    detected_format: str | None = None,
) -> DatasetVersion:
    """Used by the worker to record validation progress and the final report."""
    if status not in VersionStatus.values:
        raise ValidationError(f"Unknown status {status!r}.")
    changes: dict[str, object] = {"status": status}
    if report is not None:
        changes["report"] = report
    if n_examples is not None:
        changes["n_examples"] = n_examples
    DatasetVersion.objects.filter(pk=version_id).update(**changes)
    version = DatasetVersion.objects.get(pk=version_id)
    if detected_format and not version.format and detected_format in DatasetFormat.values:
        version.format = detected_format
        version.save(update_fields=["format"])
    return version
