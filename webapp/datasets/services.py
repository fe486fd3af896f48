"""Writes for datasets. Uploading under an existing name adds a version, never overwrites."""

from __future__ import annotations

import errno
import hashlib
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Max
from django.template.defaultfilters import filesizeformat

from webapp.core.limits import LimitExceeded, StorageFailed
from webapp.datasets.models import (
    FORMAT_AUTO,
    FORMAT_VALUES,
    Dataset,
    DatasetPurpose,
    DatasetVersion,
    VersionStatus,
    stored_filename,
)
from webapp.datasets.selectors import team_storage_left
from webapp.jobs import queue
from webapp.jobs.dispatch import job_enqueue_on_commit
from webapp.jobs.services import job_create
from webapp.teams.models import Team


def storage_limit_exceeded(*, left: int, size: int | None = None) -> LimitExceeded:
    """The refusal of a file over what the team has left of TEAM_STORAGE_BYTES."""
    limit = filesizeformat(settings.TEAM_STORAGE_BYTES)
    this = f"this file is {filesizeformat(size)}" if size is not None else "this file is larger"
    return LimitExceeded(
        f"Your team has {filesizeformat(left)} left of its {limit} dataset storage limit, "
        f"and {this}. Delete dataset versions you no longer need, or ask the operator to "
        "raise the limit.",
        status=413,
        api_code="team_storage_limit",
        field="file",
    )


def out_of_disk_space() -> StorageFailed:
    """The refusal of a file the server's disk had no room for (not the user's fault)."""
    return StorageFailed(
        "The server ran out of disk space while storing this file, so it was not saved. "
        "Try again later, or tell the operator that the server's disk is full.",
        status=507,
        api_code="insufficient_storage",
        field="file",
    )


def storage_unavailable() -> StorageFailed:
    """The refusal of a file the object store would not take (it failed or did not answer)."""
    return StorageFailed(
        "The file could not be stored: the server's file store did not accept it, so it was "
        "not saved. Try again later, or tell the operator if it keeps happening.",
        status=503,
        api_code="storage_unavailable",
        field="file",
    )


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in {errno.ENOSPC, errno.EDQUOT}


def _storage_check(*, team: Team, size: int) -> None:
    """Under the team's row lock, so two uploads cannot both take the last bytes."""
    Team.objects.select_for_update().filter(pk=team.pk).first()
    left = team_storage_left(team=team)
    if left is not None and size > left:
        raise storage_limit_exceeded(left=left, size=size)


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
    fmt: str = FORMAT_AUTO,
    preview_model: str = "",
    purpose: str = "",
    origin: dict[str, Any] | None = None,
) -> DatasetVersion:
    """Adds a version; a new name makes a dataset of `purpose` (blank: fine-tuning data).
    A new version keeps its dataset's purpose: a different one asked for is refused.
    `origin`: where a version Tunebook made came from (the lineage shows it)."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the dataset a name."})
    if len(name) > 100:
        raise ValidationError({"name": "Dataset names are at most 100 characters."})
    if purpose and purpose not in DatasetPurpose.values:
        raise ValidationError({"purpose": f"Unknown purpose {purpose!r}."})
    if fmt not in FORMAT_VALUES:
        raise ValidationError({"format": f"Unknown format {fmt!r}."})
    if not upload.size:
        raise ValidationError({"file": "The file is empty."})
    sha256 = _sha256(upload)
    filename = stored_filename(upload.name or "data")
    with transaction.atomic():
        _storage_check(team=team, size=upload.size)
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
            origin=origin or {},
            created_by=created_by,
        )
        _file_place(version=version, filename=filename, upload=upload)
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
            job_enqueue_on_commit(job=job, task_path=queue.VALIDATE_DATASET, args=[version.pk])
        except BaseException:
            version.file.delete(save=False)  # no row, no file
            raise
    return version


def _file_place(*, version: DatasetVersion, filename: str, upload: UploadedFile) -> None:
    """Puts the upload's bytes under the version's FileField. Already streamed into object
    storage (uploads.StoredUpload): only its key is recorded, the bytes are not copied again.
    Otherwise it is saved (a temp file moves: a rename on the same disk); a save that fails
    halfway, e.g. a copy across disks that fills one, leaves no partial file."""
    stored_key = getattr(upload, "stored_key", "")
    if stored_key:
        version.file = stored_key
        return
    store = version.file.storage
    field = version.file.field
    key = store.get_available_name(field.generate_filename(version, filename), field.max_length)
    try:
        version.file = store.save(key, upload, max_length=field.max_length)
    except BaseException as exc:
        if store.exists(key):  # the key was free a moment ago: what is there is our half
            store.delete(key)
        if is_disk_full(exc):
            raise out_of_disk_space() from exc
        raise


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
    if detected_format and not version.format and detected_format in FORMAT_VALUES:
        version.format = detected_format
        version.save(update_fields=["format"])
    return version
