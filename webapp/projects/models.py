"""Projects are notebooks: an ordered list of cells, each with versioned runs."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.jobs.models import Job
from webapp.teams.models import Team


def cell_kind_choices() -> list[tuple[str, str]]:
    # A callable, so adding a kind to the registry needs no migration.
    from webapp.projects.cell_kinds import choices

    return choices()


class Project(models.Model):
    TEAM_PATH = "team"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "id"]

    def __str__(self) -> str:
        return self.name


class Cell(models.Model):
    TEAM_PATH = "project__team"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="cells")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=30, choices=cell_kind_choices)
    title = models.CharField(max_length=100, blank=True)
    # Per-kind settings, validated by the kind's form in cell_kinds; references to earlier
    # cells are stored as ids under the keys the kind declares.
    config = models.JSONField(default=dict, blank=True)
    # Goes up by one on each edit; an edit made from an older version is refused
    # (cell_update), so two people editing at once do not overwrite each other silently.
    version = models.PositiveIntegerField(default=1)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project_id", "position", "id"]
        indexes = [models.Index(fields=["project", "position"], name="cell_project_position")]

    def __str__(self) -> str:
        return self.title or f"{self.get_kind_display()} cell {self.position}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class CellRun(models.Model):
    """One run of a cell. Re-running adds a version; earlier outputs stay."""

    TEAM_PATH = "cell__project__team"

    cell = models.ForeignKey(Cell, on_delete=models.CASCADE, related_name="runs")
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    # The config the run used, frozen, so old outputs stay explainable after edits.
    inputs = models.JSONField(default=dict, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    job = models.ForeignKey(Job, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["cell_id", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["cell", "version"], name="cellrun_unique_version")
        ]

    def __str__(self) -> str:
        return f"{self.cell} run v{self.version}"


class MeasuredThroughput(models.Model):
    """What finished fine-tunes measured on one kind of worker for one base model: the
    recent runs' token counts, training and start-up seconds and peak memory
    (webapp.projects.throughput), from which the pre-flight estimate works."""

    lane = models.CharField(max_length=30)  # the queue the runs went to
    device = models.CharField(max_length=30, blank=True)  # as the worker reported: cpu, cuda
    base_model = models.CharField(max_length=100)
    quantization = models.CharField(max_length=10)
    # The newest runs last, at most throughput.KEEP_RUNS of them.
    runs = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["lane", "device", "base_model", "quantization"],
                name="throughput_unique_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.base_model} ({self.quantization}) on {self.lane}/{self.device or '?'}"
