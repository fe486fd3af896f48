"""An export of a finished run (a fine-tune's adapter, or a transfer's transferred one):
merged weights, GGUF or the portable adapter, made by a job on the worker queue."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.jobs.models import Job, JobStatus
from webapp.projects.models import CellRun


class Export(models.Model):
    TEAM_PATH = "run__cell__project__team"

    run = models.ForeignKey(CellRun, on_delete=models.CASCADE, related_name="exports")
    # finetune_core.contracts.layout: EXPORT_FORMATS and each format's EXPORT_TYPES.
    format = models.CharField(max_length=20)
    type = models.CharField(max_length=20)
    # Its state, progress, cancel and error: the one Job, as every other worker task.
    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="export")
    # The export folder's storage key: the run's (or transferred adapter's) + exports/F-T.
    key = models.CharField(max_length=500)
    # Once done: [{"name", "bytes", "sha256"}] and export.json without its file list.
    files = models.JSONField(default=list, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    # A later export of the same run, format and type wrote over this one's folder.
    replaced_by = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["run", "format", "type"], name="export_target")]

    def __str__(self) -> str:
        return f"export #{self.pk}: {self.label}"

    @property
    def label(self) -> str:
        return self.format if self.format == "adapter" else f"{self.format} {self.type}"

    @property
    def status(self) -> str:
        """The job's status; "replaced" once a later export of the same kind wrote over it."""
        if self.replaced_by_id is not None:
            return "replaced"
        return self.job.status

    @property
    def is_active(self) -> bool:
        return not self.job.is_finished

    @property
    def is_ready(self) -> bool:
        return self.job.status == JobStatus.SUCCEEDED and self.replaced_by_id is None

    @property
    def total_bytes(self) -> int:
        return sum(int(f.get("bytes", 0)) for f in self.files)
