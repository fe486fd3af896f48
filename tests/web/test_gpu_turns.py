"""Turns between teams on the GPU queue (issue 20 item 10): with TEAM_GPU_JOBS_SENT, a team's
jobs beyond N wait in the database and are sent as jobs finish, team by team. Real Job
rows; the order is read from the broker itself (a SQLite broker of the test's own)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import transaction

from tests.web.worker_harness import broker
from webapp.jobs import queue
from webapp.jobs.dispatch import job_enqueue_on_commit
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.recovery import jobs_recover
from webapp.jobs.services import job_cancel, job_start, job_succeed
from webapp.jobs.turns import WAITING
from webapp.teams.models import Team
from webapp.teams.services import team_create


@pytest.fixture
def sqlite_broker(transactional_db: None, tmp_path: Path) -> Iterator[None]:
    with broker(f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"):
        yield


def gpu_messages() -> list[int]:
    """The jobs whose tasks the broker holds on the gpu queue, in the order it got them."""
    with queue.app.connection_for_read() as conn:
        channel = conn.default_channel
        message, q = channel.message_cls, channel.queue_cls
        rows = (
            channel.session.query(message.payload)
            .join(q, message.queue_id == q.id)
            .filter(q.name == queue.GPU, message.visible.is_(True))
            .order_by(message.id)
        )
        task_ids = [json.loads(payload)["headers"]["id"] for (payload,) in rows]
    by_task = dict(Job.objects.values_list("celery_task_id", "pk"))
    return [by_task[t] for t in task_ids]


def gpu_job(team: Team) -> int:
    with transaction.atomic():
        job = Job.objects.create(team=team, kind="cell.finetune")
        job_enqueue_on_commit(job=job, task_path=queue.RUN_CELL, args=[job.pk])
    return job.pk


def test_one_teams_many_jobs_do_not_starve_another_teams_one(
    sqlite_broker, owner, outsider, settings
) -> None:
    settings.TEAM_GPU_JOBS_SENT = 2
    busy = team_create(name="Busy", owner=owner)
    small = team_create(name="Small", owner=outsider)
    a = [gpu_job(busy) for _ in range(5)]
    b = gpu_job(small)
    # Only two of Busy's jobs went to the broker: Small's job is third, not sixth.
    assert gpu_messages() == [a[0], a[1], b]
    assert [Job.objects.get(pk=pk).params.get(WAITING, False) for pk in a] == [
        False, False, True, True, True
    ]  # fmt: skip
    assert all(Job.objects.get(pk=pk).status == JobStatus.QUEUED for pk in a)
    # A job of Busy finishes: its next waiting job is sent (a worker has taken a[0]).
    job_start(job_id=a[0])
    job_succeed(job_id=a[0])
    assert gpu_messages()[3:] == [a[2]]
    b2 = gpu_job(small)
    job_cancel(job=Job.objects.get(pk=a[1]))  # a stop is a finish too
    assert gpu_messages()[4:] == [b2, a[3]]
    waiting = Job.objects.get(pk=a[4])
    assert waiting.params[WAITING] and "Its team's turn" not in str(
        list(waiting.events.values_list("message", flat=True))
    )


def test_recovery_sends_in_rounds_one_job_a_team(sqlite_broker, owner, outsider, settings):
    settings.TEAM_GPU_JOBS_SENT = 1
    first = team_create(name="First", owner=owner)
    second = team_create(name="Second", owner=outsider)
    a = [gpu_job(first) for _ in range(3)]
    b = [gpu_job(second) for _ in range(2)]
    assert gpu_messages() == [a[0], b[0]]
    # The operator allows two each: recovery sends one job a team a round, the team with
    # the oldest waiting job first, and never resends a waiting job as "lost".
    settings.TEAM_GPU_JOBS_SENT = 2
    outcomes = jobs_recover()
    assert [(o.job_id, o.action) for o in outcomes] == [(a[1], "sent"), (b[1], "sent")]
    assert gpu_messages() == [a[0], b[0], a[1], b[1]]
    settings.TEAM_GPU_JOBS_SENT = 0  # turns off: whatever waits is sent
    jobs_recover()
    assert gpu_messages()[4:] == [a[2]]
    assert not any(WAITING in j.params for j in Job.objects.all())
