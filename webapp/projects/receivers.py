"""A cell run settles with its job, whichever path stopped the job."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from webapp.jobs.models import Job
from webapp.jobs.signals import job_stopped
from webapp.projects.run_lifecycle import cell_runs_follow_job


@receiver(job_stopped, sender=Job, dispatch_uid="projects.settle_runs")
def settle_runs(sender: type[Job], job: Job, **kwargs: Any) -> None:
    cell_runs_follow_job(job=job)
