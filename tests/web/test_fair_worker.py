"""A fair worker: nothing a person started waits silently behind background work.

Real Job rows for where a queued job stands (its queue, its place, what runs on its
worker), and real worker processes started as `make run` starts them (one per lane,
`python -m workers.embedded`) for who waits for whom.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from tests.web.conftest import CHAT_JSONL, Upload, client_for
from tests.web.fair_tasks import BACKGROUND_SLEEP, PERSON_JOB
from tests.web.worker_harness import Worker, broker, wait_for, worker_broker_url
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create
from webapp.jobs.dispatch import job_enqueue_on_commit
from webapp.jobs.models import Job, JobStatus
from webapp.jobs.queue import BACKGROUND, DEFAULT, GPU, MAKE_TRANSFERABLE, ROUTES, RUN_CELL
from webapp.jobs.selectors import job_queue_place, person_job_waiting
from webapp.jobs.services import job_create
from webapp.teams.services import team_create


def a_job(team: Any, user: Any, *, kind: str, queue: str, status: str, age_s: float = 0) -> Job:
    """A job as dispatch leaves it: its task's queue recorded in its params."""
    task = {"path": RUN_CELL, "args": [], "queue": queue}
    job = Job.objects.create(
        team=team, kind=kind, status=status, params={"_task": task}, created_by=user
    )
    if age_s:
        Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(seconds=age_s))
    return Job.objects.get(pk=job.pk)


def test_background_work_has_its_own_queue_beside_the_gpu_one() -> None:
    assert ROUTES[MAKE_TRANSFERABLE] == BACKGROUND


def test_queued_run_says_its_place_and_that_the_background_job_will_step_aside(
    cell_run, team, owner, editor, outsider
) -> None:
    other = team_create(name="Elsewhere", owner=outsider)
    earlier = a_job(other, outsider, kind="cell.finetune", queue=GPU, status=JobStatus.QUEUED)
    Job.objects.filter(pk=earlier.pk).update(created_at=cell_run.job.created_at - timedelta(1))
    keep = a_job(team, editor, kind="transferable", queue=BACKGROUND, status=JobStatus.RUNNING)

    place = job_queue_place(job=cell_run.job)
    assert (place.queue, place.position, place.queued, place.background) == (GPU, 2, 2, False)
    [running] = place.running
    assert (running.job, running.background, running.steps_aside) == (keep, True, True)

    page = client_for(owner).get(reverse("run_detail", args=[cell_run.pk])).content.decode()
    assert "Waiting in the <strong>gpu</strong> queue: number 2 of 2" in page
    assert "Behind ‘Keep transferable (seeds and discriminator)" in page
    assert "started by ed" in page
    assert "(background, it steps aside for this job within seconds)" in page
    job_page = client_for(owner).get(reverse("job_detail", args=[cell_run.job_id]))
    assert "number 2 of 2" in job_page.content.decode()
    notebook = client_for(owner).get(reverse("project_detail", args=[cell_run.cell.project_id]))
    assert "Waiting in the <strong>gpu</strong> queue" in notebook.content.decode()


def test_another_teams_running_job_is_counted_but_not_named(
    cell_run, team, owner, outsider
) -> None:
    other = team_create(name="Elsewhere", owner=outsider)
    a_job(other, outsider, kind="cell.finetune", queue=GPU, status=JobStatus.RUNNING)

    place = job_queue_place(job=cell_run.job)
    assert [(r.job, r.background, r.steps_aside) for r in place.running] == [(None, False, False)]
    page = client_for(owner).get(reverse("job_detail", args=[cell_run.job_id])).content.decode()
    assert "Behind another team’s job, running on its worker now." in page
    assert "oscar" not in page and "Elsewhere" not in page


def test_queued_background_job_says_it_waits_for_peoples_work(team, owner) -> None:
    keep = a_job(team, owner, kind="transferable", queue=BACKGROUND, status=JobStatus.QUEUED)
    a_job(team, owner, kind="cell.finetune", queue=GPU, status=JobStatus.RUNNING)
    a_job(team, owner, kind="validate_dataset", queue=DEFAULT, status=JobStatus.RUNNING)

    place = job_queue_place(job=keep)
    assert (place.queue, place.position, place.background) == (BACKGROUND, 1, True)
    # Only what runs on its lane (gpu + background), not the CPU worker's validation.
    assert [(r.job.kind, r.steps_aside) for r in place.running] == [("cell.finetune", False)]
    page = client_for(owner).get(reverse("job_detail", args=[keep.pk])).content.decode()
    assert "Background work: it runs when no job a person started is waiting" in page
    assert "Behind ‘Fine-tune’, started by olga, running on its worker now." in page


def test_a_job_with_nothing_ahead_or_already_running_says_so(team, owner) -> None:
    queued = a_job(team, owner, kind="validate_dataset", queue=DEFAULT, status=JobStatus.QUEUED)
    page = client_for(owner).get(reverse("job_detail", args=[queued.pk])).content.decode()
    assert "number 1 of 1" in page and "Nothing is running on its worker" in page
    running = a_job(team, owner, kind="cell.finetune", queue=GPU, status=JobStatus.RUNNING)
    assert job_queue_place(job=running) is None
    page = client_for(owner).get(reverse("job_detail", args=[running.pk])).content.decode()
    assert "Waiting in the" not in page


def test_background_work_makes_way_for_any_job_a_person_started(team, owner) -> None:
    lane = [GPU, BACKGROUND]
    a_job(team, owner, kind="transferable", queue=BACKGROUND, status=JobStatus.QUEUED, age_s=60)
    a_job(team, owner, kind="validate_dataset", queue=DEFAULT, status=JobStatus.QUEUED, age_s=60)
    # Neither background work nor a job only another worker takes is a reason.
    assert person_job_waiting(queues=lane, longer_than_s=5) is None
    finetune = a_job(team, owner, kind="cell.finetune", queue=GPU, status=JobStatus.QUEUED)
    assert person_job_waiting(queues=lane, longer_than_s=5) is None  # a free worker may take it
    assert person_job_waiting(queues=lane, longer_than_s=0) == finetune
    assert person_job_waiting(queues=[DEFAULT], longer_than_s=5).kind == "validate_dataset"


# Real workers, as `make run` starts them.


@pytest.fixture
def embedded_workers(
    transactional_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Worker]:
    monkeypatch.setenv("INTERACTIVE_WAIT_S", "0")  # read by the worker processes
    url = worker_broker_url(tmp_path)
    with broker(url):
        worker = Worker(
            broker_url=url,
            data_dir=tmp_path,
            media_root=tmp_path / "media",
            log=tmp_path / "worker.log",
            embedded=True,
            include=("tests.web.fair_tasks",),
        )
        try:
            yield worker
        finally:
            worker.stop()


def background_job_running(team: Any, user: Any, worker: Worker, *, seconds: float) -> Job:
    """Background work that holds the gpu lane's worker for `seconds`, once it started."""
    with transaction.atomic():
        job = job_create(team=team, kind="transferable", created_by=user)
        job_enqueue_on_commit(
            job=job, task_path=BACKGROUND_SLEEP, args=[job.pk, seconds], queue=BACKGROUND
        )

    def running() -> bool:
        return status_of(job)() == JobStatus.RUNNING

    wait_for(running, timeout=60, what="the background job to start", worker=worker)
    return job


def status_of(job: Job) -> Callable[[], str]:
    return lambda: Job.objects.get(pk=job.pk).status


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_an_upload_is_validated_while_background_work_holds_the_gpu_worker(
    embedded_workers, team, owner
) -> None:
    keep = background_job_running(team, owner, embedded_workers, seconds=45)
    version = dataset_version_create(
        team=team, name="hello", upload=Upload.make("chat.jsonl", CHAT_JSONL), created_by=owner
    )
    wait_for(
        lambda: DatasetVersion.objects.get(pk=version.pk).status == VersionStatus.VALID,
        timeout=40,  # with one worker for every queue it waits out the 45 s background job
        what="the upload's validation",
        worker=embedded_workers,
    )
    # Its own worker did it: the background job held on, not even stepping aside.
    assert status_of(keep)() == JobStatus.RUNNING
    assert not keep.events.filter(message__startswith="Paused").exists()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_background_work_steps_aside_for_a_persons_gpu_job(embedded_workers, team, owner) -> None:
    keep = background_job_running(team, owner, embedded_workers, seconds=60)
    with transaction.atomic():
        mine = job_create(team=team, kind="cell.finetune", created_by=owner)
        job_enqueue_on_commit(job=mine, task_path=PERSON_JOB, args=[mine.pk], queue=GPU)
    wait_for(
        lambda: status_of(mine)() == JobStatus.SUCCEEDED,
        timeout=40,  # far less than the 60 s the background job would hold the worker
        what="the person's job",
        worker=embedded_workers,
    )
    messages = list(keep.events.values_list("message", flat=True))
    assert "Paused for 'Fine-tune', which a person started and is waiting for" in " ".join(messages)
    assert status_of(keep)() in (JobStatus.QUEUED, JobStatus.RUNNING)  # back in line, not lost
