"""The OpenAI-compatible API's own records: keys, fine-tuning jobs, chat completions.

Everything else (files, runs, jobs) lives in the existing apps; these rows only map
OpenAI's objects onto them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.datasets.models import DatasetVersion
from webapp.jobs.models import Job
from webapp.projects.models import CellRun, Project
from webapp.teams.models import Team


class ApiKey(models.Model):
    TEAM_PATH = "team"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    # The first characters of the key, shown in lists and used to find the row.
    prefix = models.CharField(max_length=16, unique=True)
    # sha256 of the whole key; the key itself is shown once and never stored.
    hashed_secret = models.CharField(max_length=64)
    read_only = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class ApiProject(models.Model):
    """The per-team notebook that holds the cells behind API fine-tuning jobs."""

    TEAM_PATH = "team"

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="api_project")
    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="+")


class FineTuningJob(models.Model):
    TEAM_PATH = "team"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_fine_tunes")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    base_model = models.CharField(max_length=100)
    suffix = models.CharField(max_length=64, blank=True)
    training_file = models.ForeignKey(
        DatasetVersion, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    training_file_ref = models.CharField(max_length=40)
    seed = models.BigIntegerField(default=0)
    metadata = models.JSONField(default=dict, blank=True)
    # The hyperparameters as the client sent them ("auto" kept), for the job object.
    requested = models.JSONField(default=dict, blank=True)
    cell_run = models.ForeignKey(CellRun, on_delete=models.SET_NULL, null=True, related_name="+")
    job = models.ForeignKey(Job, on_delete=models.SET_NULL, null=True, related_name="+")
    # Pause = cancel with a checkpoint; this marks a cancelled job as resumable.
    paused_at = models.DateTimeField(null=True, blank=True)
    model_deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class CompletionStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ChatCompletion(models.Model):
    """One generation request; the worker grows `text` while the view streams it."""

    TEAM_PATH = "team"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_completions")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    model = models.CharField(max_length=300)
    base_model = models.CharField(max_length=100)
    adapter_dir = models.CharField(max_length=500, blank=True)
    quantization = models.CharField(max_length=10, default="nf4")
    messages = models.JSONField(default=list)
    max_tokens = models.PositiveIntegerField(default=256)
    temperature = models.FloatField(default=1.0)
    top_p = models.FloatField(default=1.0)
    seed = models.BigIntegerField(null=True, blank=True)
    stop = models.JSONField(default=list, blank=True)  # up to 4 strings, left out of the text
    status = models.CharField(
        max_length=10, choices=CompletionStatus.choices, default=CompletionStatus.QUEUED
    )
    text = models.TextField(blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    finish_reason = models.CharField(max_length=20, blank=True)
    error = models.TextField(blank=True)
    job = models.ForeignKey(Job, on_delete=models.SET_NULL, null=True, related_name="+")
    # Who answered (an ops.WorkerHost name) and in how many seconds, prompt included: the
    # workers' measured generation throughput (webapp.ops.workers.measured_generation).
    served_by = models.CharField(max_length=200, blank=True)
    generate_s = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["served_by", "-id"], name="completion_served_by")]


class IdempotentRequest(models.Model):
    """A POST sent with an Idempotency-Key: its fingerprint, then its response to replay.

    `status_code` is null while the first request is still being answered. Rows older
    than IDEMPOTENCY_TTL_S are ignored and purged.
    """

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    content_type = models.CharField(max_length=200, blank=True)
    body = models.BinaryField(blank=True, default=b"")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotent_request_unique_key")
        ]
