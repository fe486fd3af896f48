"""Signals other apps listen to, so jobs never imports the records that own a job."""

from __future__ import annotations

from django.dispatch import Signal

# Sent with job=<Job> after a job reached failed or cancelled by any path (a worker, a
# user, or stale-job recovery), so the run or dataset version it belongs to settles too.
job_stopped = Signal()
