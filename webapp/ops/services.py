"""Operator actions (the admin calls these; they call the owning apps' services)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from webapp.jobs.dispatch import job_enqueue_on_commit
from webapp.jobs.models import Job
from webapp.jobs.services import job_requeue
from webapp.projects.models import CellRun
from webapp.projects.services import cell_run_resume


@transaction.atomic
def job_operator_requeue(*, job: Job, by: AbstractBaseUser) -> Job:
    """Queue a failed or cancelled job again and send its task once this commits.

    A cell run's job goes through cell_run_resume, so the run is queued with it; any other
    job is sent again with the task recorded when it was first enqueued.
    """
    run = CellRun.objects.select_related("cell").filter(job=job).first()
    if run is not None:
        cell_run_resume(run=run, by=by)
        return Job.objects.get(pk=job.pk)
    task = job.params.get("_task")
    if not task:
        raise ValidationError(f"Job #{job.pk} has no recorded task to send again.")
    job = job_requeue(job=job, reason=f"Re-queued by operator {by.get_username()}")
    job_enqueue_on_commit(
        job=job, task_path=task["path"], args=task["args"], queue=task.get("queue")
    )
    return job
