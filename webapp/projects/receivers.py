"""A cell run settles with its job, whichever path stopped the job."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from webapp.jobs.models import Job
from webapp.jobs.signals import job_stopped
from webapp.projects.models import CellRun, RunStatus


@receiver(job_stopped, sender=Job, dispatch_uid="projects.settle_runs")
def settle_runs(sender: type[Job], job: Job, **kwargs: Any) -> None:
    # Only runs still marked live: a runner that already settled its run keeps its word.
    CellRun.objects.filter(job_id=job.pk, status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).update(
        status=job.status, finished_at=job.finished_at
    )
