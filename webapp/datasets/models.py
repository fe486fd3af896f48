"""Datasets are named per team; every upload adds an immutable DatasetVersion."""

from __future__ import annotations

import os
import uuid

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.db import models
from django.utils.text import get_valid_filename

from finetune_core.contracts.data import DATA_FORMATS
from webapp.jobs.models import Job
from webapp.teams.models import Team


class DatasetPurpose(models.TextChoices):
    # Chosen at upload: it decides how the worker validates the file and which cells
    # may use it (fine-tune data in dataset cells, prompt sets in evaluation cells).
    TRAINING = "training", "Fine-tuning data"
    EVALUATION = "evaluation", "Evaluation prompts"


class Dataset(models.Model):
    TEAM_PATH = "team"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=100)
    purpose = models.CharField(
        max_length=12, choices=DatasetPurpose.choices, default=DatasetPurpose.TRAINING
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="dataset_unique_team_name")
        ]

    def __str__(self) -> str:
        return self.name


# The format a version is read as: the engine's formats, or "" to detect it from the file
# (validation then records what it found).
FORMAT_AUTO = ""
FORMAT_CHOICES = [(FORMAT_AUTO, "Detect from file"), *DATA_FORMATS]
FORMAT_VALUES = frozenset(value for value, _ in FORMAT_CHOICES)


class VersionStatus(models.TextChoices):
    UPLOADED = "uploaded", "Uploaded"
    VALIDATING = "validating", "Validating"
    VALID = "valid", "Valid"
    INVALID = "invalid", "Invalid"


def version_upload_to(instance: DatasetVersion, filename: str) -> str:
    dataset = instance.dataset
    return f"datasets/team-{dataset.team_id}/dataset-{dataset.pk}/v{instance.version}/{filename}"


def stored_filename(name: str) -> str:
    """The last part of a version's key: the uploaded file's name, made safe and short."""
    try:
        safe = get_valid_filename(os.path.basename(name or "data"))
    except SuspiciousFileOperation:  # nothing usable left, e.g. ".."
        safe = ""
    stem, ext = os.path.splitext(safe or "data")
    return stem[:150] + ext[:20]


def streamed_upload_key(*, team_id: int | None, filename: str) -> str:
    """The key an upload streams to before its version exists (object storage: the bytes go
    straight to their final key, never copied): random, so no two uploads share it."""
    team = f"team-{team_id}" if team_id is not None else "unassigned"
    return f"datasets/{team}/upload-{uuid.uuid4().hex}/{stored_filename(filename)}"


class DatasetVersion(models.Model):
    TEAM_PATH = "dataset__team"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    file = models.FileField(upload_to=version_upload_to, max_length=500)
    original_name = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    # What the user asked for ("" = detect); the validator's answer goes to report["format"].
    format = models.CharField(max_length=20, choices=FORMAT_CHOICES, blank=True)
    # Base model whose tokenizer and chat template the report uses ("" = estimate only).
    preview_model = models.CharField(max_length=100, blank=True)
    status = models.CharField(
        max_length=12, choices=VersionStatus.choices, default=VersionStatus.UPLOADED
    )
    report = models.JSONField(default=dict, blank=True)
    n_examples = models.PositiveIntegerField(null=True, blank=True)
    validation_job = models.ForeignKey(
        Job, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Where a version made by Tunebook came from (lineage), e.g. preference data from an
    # evaluation: {"kind", "label", "run", ...}; empty for an upload.
    origin = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset_id", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "version"], name="datasetversion_unique_number"
            )
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.version}"
