"""Jobs stuck in "queued" (issue 20 item 6): the broker lost the task, as a Redis restart
without persistence does, or the web process died between commit and send. Recovery
sends such a job again, once. Each test runs its own redis-server on a free port (never
the machine's shared one) and restarts it with SHUTDOWN NOSAVE."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.web.conftest import CHAT_JSONL, Upload
from tests.web.own_servers import RedisServer
from tests.web.worker_harness import Worker, wait_for
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.queue import DEFAULT, held_task_ids
from webapp.jobs.recovery import Recovery, jobs_resend_lost


def _upload(team: object, owner: object) -> Job:
    version = dataset_version_create(
        team=team, name="greetings", upload=Upload.make("chat.jsonl", CHAT_JSONL), created_by=owner
    )
    return Job.objects.get(pk=version.validation_job_id)


def test_a_job_lost_in_a_broker_restart_is_sent_again_once(
    own_redis: RedisServer, team, owner, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        job = _upload(team, owner)
    first = job.celery_task_id
    assert held_task_ids({DEFAULT}) == {first}
    assert jobs_resend_lost(grace_s=0) == []  # the broker holds it: nothing to do
    own_redis.restart()
    assert held_task_ids({DEFAULT}) == set()
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_resend_lost(grace_s=0) == [Recovery(job.pk, "resent")]
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.celery_task_id != first
    assert held_task_ids({DEFAULT}) == {job.celery_task_id}
    assert jobs_resend_lost(grace_s=0) == []  # sent once, not on every pass
    assert "no longer held this job" in " ".join(e.message for e in job.events.all())


def test_a_job_never_sent_is_sent_once_its_grace_is_over(
    own_redis: RedisServer, team, owner, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=False):  # died between commit and send
        job = _upload(team, owner)
    assert held_task_ids({DEFAULT}) == set()
    assert jobs_resend_lost() == []  # just queued: it may still be on its way
    with django_capture_on_commit_callbacks(execute=True):
        assert [o.action for o in jobs_resend_lost(grace_s=0)] == ["resent"]
    job.refresh_from_db()
    assert held_task_ids({DEFAULT}) == {job.celery_task_id}


def test_an_unreadable_broker_resends_nothing(own_redis: RedisServer, team, owner) -> None:
    job = _upload(team, owner)  # never sent (no commit in this test)
    own_redis.stop()
    assert held_task_ids({DEFAULT}) is None
    assert jobs_resend_lost(grace_s=0) == []
    assert Job.objects.get(pk=job.pk).celery_task_id == job.celery_task_id


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_real_worker_runs_the_job_the_restart_lost(
    own_redis: RedisServer, transactional_db: None, team, owner, tmp_path: Path
) -> None:
    job = _upload(team, owner)  # committed and sent
    own_redis.restart()  # ...and lost
    assert [o.action for o in jobs_resend_lost(grace_s=0)] == ["resent"]
    worker = Worker(
        broker_url=own_redis.url,
        data_dir=tmp_path,
        media_root=tmp_path / "media",
        log=tmp_path / "worker.log",
    )
    try:
        version_id = job.params["dataset_version_id"]
        wait_for(
            lambda: DatasetVersion.objects.get(pk=version_id).status == VersionStatus.VALID,
            timeout=120,
            what="validation of the re-sent job",
            worker=worker,
        )
        assert Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED
    finally:
        worker.stop()
