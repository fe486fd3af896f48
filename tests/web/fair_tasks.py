"""Test-only Celery tasks, which a test's worker imports with `-I tests.web.fair_tasks`:
background work that takes a while (and makes way as the real background job does), and
a person's quick job, to see which one waits for which."""

from __future__ import annotations

import time

from celery import Task

from webapp.jobs.services import job_start, job_step_aside, job_succeed
from webapp.projects.job_names import job_title
from workers.celery import app
from workers.reporter import MakeWay
from workers.transfer_keep import ASIDE

BACKGROUND_SLEEP = "tests.web.fair_tasks.background_sleep"
PERSON_JOB = "tests.web.fair_tasks.person_job"


@app.task(bind=True, name=BACKGROUND_SLEEP)
def background_sleep(self: Task, job_id: int, seconds: float) -> None:
    """Holds its worker for `seconds`, unless a person's job waits for that worker."""
    if job_start(job_id=job_id, celery_task_id=self.request.id or "") is None:
        return
    make_way, deadline = MakeWay(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        if make_way() and make_way.waiting is not None:
            job_step_aside(job_id=job_id, reason=ASIDE.format(title=job_title(make_way.waiting)))
            return
        time.sleep(0.1)
    job_succeed(job_id=job_id, result={"slept_s": seconds})


@app.task(bind=True, name=PERSON_JOB)
def person_job(self: Task, job_id: int) -> None:
    if job_start(job_id=job_id, celery_task_id=self.request.id or "") is not None:
        job_succeed(job_id=job_id)
