from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class WorkerState(models.TextChoices):
    ALIVE = "alive", "Alive"
    LOST = "lost", "Lost (quiet for longer than WORKER_LOST_AFTER_S)"
    STOPPED = "stopped", "Stopped"


class WorkerHost(models.Model):
    """A worker process as it announced itself (workers/announce.py): where it runs, on
    what device with which NF4 path (its start-up check), which queues it serves and which
    base models its host has converted; refreshed every WORKER_HEARTBEAT_S while it lives."""

    name = models.CharField(max_length=200, unique=True)  # Celery's node name
    host = models.CharField(max_length=200)
    pid = models.IntegerField()
    device = models.CharField(max_length=20)  # cpu | cuda
    device_name = models.CharField(max_length=200, blank=True)
    device_memory_bytes = models.BigIntegerField(null=True, blank=True)
    # finetune_core.kernels.paths: compiled-cuda | compiled-cpu | bitsandbytes | reference
    nf4_path = models.CharField("NF4 path", max_length=20, blank=True)
    queues = models.JSONField(default=list)
    cached_models = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-last_seen_at",)

    def __str__(self) -> str:
        return self.name

    @property
    def state(self) -> WorkerState:
        if self.stopped_at is not None:
            return WorkerState.STOPPED
        quiet = timezone.now() - self.last_seen_at
        lost = quiet > timedelta(seconds=settings.WORKER_LOST_AFTER_S)
        return WorkerState.LOST if lost else WorkerState.ALIVE
