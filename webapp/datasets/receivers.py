"""A dataset version whose validation job failed (a dead worker, say) says so."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.signals import job_stopped


@receiver(job_stopped, sender=Job, dispatch_uid="datasets.settle_versions")
def settle_versions(sender: type[Job], job: Job, **kwargs: Any) -> None:
    if job.status != JobStatus.FAILED:
        return  # a cancelled validation leaves the version as uploaded
    DatasetVersion.objects.filter(
        validation_job_id=job.pk, status__in=(VersionStatus.UPLOADED, VersionStatus.VALIDATING)
    ).update(status=VersionStatus.INVALID, report={"ok": False, "error": job.error})
