"""Routing by what fits (issue 22), with real worker processes that report a simulated
device size (WORKER_DEVICE_MEMORY_BYTES): a fine-tune goes to the smallest queue whose
workers it fits, never to a worker too small for its memory estimate; one that fits no
alive worker is refused before it is queued, naming the nearest settings that fit; and
with no worker alive the estimate shows a wait with the queue's length, not a time."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from tests.web.conftest import client_for
from tests.web.test_finetune_worker import FAST, finished, job_of, notebook, start_worker
from tests.web.worker_harness import Worker, wait_for
from webapp.jobs.models import Job, JobStatus
from webapp.ops.models import WorkerHost
from webapp.projects.estimate import formula_memory
from webapp.projects.models import Cell, CellRun
from webapp.projects.services import cell_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
__all__ = ["start_worker"]

BIG = {"batch_size": 16, "max_length": 512}
SMALL = {"batch_size": 1, "max_length": 160}


def sizes() -> tuple[int, int]:
    """Simulated device sizes: the small worker fits SMALL's estimate but not BIG's (the
    formula's, webapp.projects.estimate), the big one both."""
    small, big = (formula_memory({**FAST, **hp}) for hp in (SMALL, BIG))
    assert small < big
    return (small + big) // 2, 4 * big


def announced(worker: Worker, queue: str) -> None:
    wait_for(
        lambda: any(queue in w.queues for w in WorkerHost.objects.filter(stopped_at=None)),
        timeout=90,
        what=f"the {queue} worker's announcement",
        worker=worker,
    )


def finetune_cell(cells: dict[str, Any], owner: Any, title: str, **hp: Any) -> Cell:
    return cell_create(
        project=cells["project"],
        kind="finetune",
        config={"dataset_cell": cells["dataset"].pk, **FAST, "max_steps": 1, **hp},
        created_by=owner,
        title=title,
    )


def run_and_finish(cell: Cell, user: Any, worker: Worker) -> Job:
    response = client_for(user).post(reverse("cell_run", args=[cell.pk]))
    assert response.status_code == 302
    run = CellRun.objects.filter(cell=cell).latest("version")
    wait_for(finished(run), timeout=150, what=f"{cell.title} training", worker=worker)
    job = job_of(run)
    assert job.status == JobStatus.SUCCEEDED, (job.error, worker.tail())
    return job


def test_jobs_go_to_the_smallest_worker_they_fit(start_worker, settings, team, owner, editor):
    settings.TRAINING_QUEUES = ["gpu-small", "gpu-big"]
    # No worker serves a training queue yet: the estimate shows a wait, not a place.
    small_size, big_size = sizes()
    small = start_worker(queues="default", WORKER_DEVICE_MEMORY_BYTES=str(small_size))
    cells = notebook(team, owner, small, max_steps=1, **SMALL)
    page = client_for(editor).get(reverse("project_detail", args=[cells["project"].pk]))
    assert (
        "No worker serving gpu-small is alive now: the run waits for one" in page.content.decode()
    )
    small.stop()

    small = start_worker(queues="gpu-small,default", WORKER_DEVICE_MEMORY_BYTES=str(small_size))
    announced(small, "gpu-small")
    big_cell = finetune_cell(cells, owner, "Big batch", **BIG)
    page = client_for(editor).get(reverse("project_detail", args=[cells["project"].pk]))
    text = page.content.decode()
    need = formula_memory({**FAST, **BIG})
    assert f"needs about {need / 2**30:.1f} GiB, more than any worker has" in text
    refused = client_for(editor).post(reverse("cell_run", args=[big_cell.pk]), follow=True)
    said = refused.content.decode()
    assert f"the largest alive is gpu-small with {small_size / 2**30:.1f} GiB" in said
    # The nearest fit halves the batch (keeping the examples a step) until it fits.
    found = re.search(r"It would fit with batch size (\d+), gradient accumulation (\d+)", said)
    batch, accum = int(found[1]), int(found[2])
    assert batch * accum == BIG["batch_size"] and batch < BIG["batch_size"]
    assert formula_memory({**FAST, **BIG, "batch_size": batch}) <= small_size
    assert formula_memory({**FAST, **BIG, "batch_size": 2 * batch}) > small_size
    assert not CellRun.objects.filter(cell=big_cell).exists()  # refused before queueing

    big = start_worker(queues="gpu-big", WORKER_DEVICE_MEMORY_BYTES=str(big_size))
    announced(big, "gpu-big")
    job = run_and_finish(big_cell, editor, big)
    assert job.params["_task"]["queue"] == "gpu-big"
    assert job.params["estimate"]["queue"] == "gpu-big"
    assert job.celery_task_id in big.tail(10**7) and job.celery_task_id not in small.tail(10**7)

    # A job that fits the small worker goes there, leaving the big one free.
    job = run_and_finish(cells["finetune"], editor, small)
    assert job.params["_task"]["queue"] == "gpu-small"
    assert job.celery_task_id in small.tail(10**7) and job.celery_task_id not in big.tail(10**7)


def test_the_estimate_names_the_jobs_running_where_it_would_run(db, settings, team) -> None:
    from django.utils.timezone import now

    from webapp.jobs.fleet import running_count
    from webapp.projects.routing import Route

    settings.TRAINING_QUEUES = ["gpu"]
    held = Route("gpu", workers=1, capacity_bytes=2**34, waiting=0, cached=True, running=1)
    assert held.text == (
        "Runs on gpu (1 worker(s), 16.0 GiB, the model ready there); none queued, 1 running: "
        "it starts when one of them ends."
    )
    free = Route("gpu", workers=2, capacity_bytes=2**34, waiting=0, cached=True, running=1)
    assert free.text.endswith("; none queued, 1 running.")
    assert Route("gpu", 1, None, 0).text.endswith("; none queued.")
    # Counted from the jobs themselves: a running one on the queue, not one elsewhere.
    for queue, status in (
        ("gpu", JobStatus.RUNNING),
        ("gpu", JobStatus.QUEUED),
        ("cpu", JobStatus.RUNNING),
    ):
        Job.objects.create(team=team, kind="cell.finetune", status=status, started_at=now(),
                           params={"_task": {"queue": queue}})  # fmt: skip
    assert running_count("gpu") == 1
