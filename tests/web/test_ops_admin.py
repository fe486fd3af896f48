"""The operators' admin: staff only, read-only pages, and a re-queue that really re-sends."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from kombu import Connection

from tests.web.conftest import client_for
from tests.web.worker_harness import broker, worker_broker_url
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.services import job_fail, job_start

CHANGELISTS = [
    "auth_user",
    "teams_team",
    "teams_membership",
    "jobs_job",
    "projects_cellrun",
    "datasets_dataset",
    "core_basemodel",
]


@pytest.fixture
def operator(db) -> User:
    return User.objects.create_superuser("root", "root@example.com", "correct-horse-battery-9")


@pytest.mark.parametrize("name", CHANGELISTS)
def test_superuser_sees_each_changelist(operator, cell_run, name) -> None:
    page = client_for(operator).get(reverse(f"admin:{name}_changelist"))
    assert page.status_code == 200
    assert b"result_list" in page.content  # a table with the rows, not an empty admin


@pytest.mark.parametrize("name", CHANGELISTS)
def test_normal_user_is_sent_to_the_admin_log_in(owner, name) -> None:
    url = reverse(f"admin:{name}_changelist")
    page = client_for(owner).get(url)
    assert page.status_code == 302
    assert page["Location"].startswith(reverse("admin:login"))


def test_jobs_cannot_be_edited_in_the_admin(operator, cell_run) -> None:
    page = client_for(operator).get(reverse("admin:jobs_job_change", args=[cell_run.job_id]))
    assert page.status_code == 200
    assert b'name="status"' not in page.content  # shown, not a form field


def _received(url: str, queue: str) -> list[tuple[str, str, list]]:
    """Every task waiting on `queue` of the broker at `url`, taken off it."""
    got = []
    with Connection(url) as conn:
        inbox = conn.SimpleQueue(queue)
        while True:
            try:
                message = inbox.get(timeout=1)
            except inbox.Empty:
                return got
            got.append((message.headers["task"], message.headers["id"], message.payload[0]))
            message.ack()


def _requeue(operator: User, job: Job) -> str:
    page = client_for(operator).post(
        reverse("admin:jobs_job_changelist"),
        {"action": "requeue", "_selected_action": [job.pk], "index": 0},
        follow=True,
    )
    assert page.status_code == 200
    return page.content.decode()


def test_requeue_action_sends_a_failed_job_again(
    operator, dataset_version, tmp_path: Path, django_capture_on_commit_callbacks
) -> None:
    job = dataset_version.validation_job
    job_start(job_id=job.pk)
    job_fail(job_id=job.pk, error="worker lost")
    old_task_id = Job.objects.get(pk=job.pk).celery_task_id
    url = worker_broker_url(tmp_path)
    with broker(url), django_capture_on_commit_callbacks(execute=True):
        page = _requeue(operator, job)
    assert "Re-queued 1 job(s)." in page
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and not job.error and job.finished_at is None
    assert job.celery_task_id != old_task_id
    assert job.events.last().message == "Re-queued by operator root"
    assert _received(url, "default") == [
        ("workers.tasks.validate_dataset_version", job.celery_task_id, [dataset_version.pk])
    ]


def test_requeue_action_resumes_a_cell_run_with_its_job(
    operator, cell_run, tmp_path: Path, django_capture_on_commit_callbacks
) -> None:
    job = Job.objects.get(pk=cell_run.job_id)
    job_start(job_id=job.pk)
    job_fail(job_id=job.pk, error="out of memory")
    url = worker_broker_url(tmp_path)
    with broker(url), django_capture_on_commit_callbacks(execute=True):
        page = _requeue(operator, job)
    assert "Re-queued 1 job(s)." in page
    job.refresh_from_db()
    cell_run.refresh_from_db()
    assert job.status == JobStatus.QUEUED and cell_run.status == "queued"
    assert job.events.last().message == "Resume requested by root"
    assert _received(url, "gpu") == [("workers.tasks.run_cell", job.celery_task_id, [cell_run.pk])]


def test_requeue_of_a_running_job_is_refused_with_the_reason(
    operator, cell_run, tmp_path: Path
) -> None:
    job_start(job_id=cell_run.job_id)
    with broker(worker_broker_url(tmp_path)):
        page = _requeue(operator, Job.objects.get(pk=cell_run.job_id))
    assert f"Job #{cell_run.job_id}: This job is still queued or running" in page
    assert Job.objects.get(pk=cell_run.job_id).status == JobStatus.RUNNING
