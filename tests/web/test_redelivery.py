"""A fine-tune whose worker process is killed (issue 20 item 5, and the fault "a prefork
worker child killed by SIGKILL"), on real Celery workers running the prefork pool, as
production's GPU worker does, and real SIGKILLs.

A killed pool child's task is handed out again by the parent (acks_late +
task_reject_on_worker_lost): killed once, the run resumes from its checkpoint and
finishes; killed at every start, as the out-of-memory killer does, it is failed after
JOB_MAX_DELIVERIES starts, saying why, instead of being handed out forever.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest
from django.conf import settings

from tests.web.test_finetune_worker import checkpointed, finished, job_of, notebook, run_cell
from tests.web.test_finetune_worker import start_worker as start_worker  # noqa: F401 - fixture
from tests.web.worker_harness import Worker, wait_for
from webapp.jobs.models import JobStatus
from webapp.jobs.queue import ROUTES, held_task_ids
from webapp.jobs.recovery import jobs_recover
from webapp.projects.models import CellRun, RunStatus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def kill_pool_child(worker: Worker, *, reap: bool = True) -> int:
    """SIGKILL the prefork pool's child (never the parent, which starts a new one). With
    reap=False it returns at once: a parent held still cannot reap its child yet."""
    parent = psutil.Process(worker.proc.pid)
    children = wait_for(parent.children, timeout=30, what="the pool child", worker=worker)
    for child in children:
        child.send_signal(signal.SIGKILL)
    if reap:
        psutil.wait_procs(children, timeout=30)
    return len(children)


def started(run: CellRun, times: int) -> Callable[[], bool]:
    """The job's `times`-th start is running."""
    return lambda: (job := job_of(run)).deliveries == times and job.status == JobStatus.RUNNING


def test_prefork_child_killed_mid_run_resumes_and_finishes(
    start_worker: Callable[..., Worker], team: Any, owner: Any
) -> None:
    worker = start_worker(pool="prefork")
    steps, every = 30, 3  # enough steps that the kill lands mid-run however fast they are
    cells = notebook(team, owner, worker, max_steps=steps, eval_every=steps, save_every=every)
    run = run_cell(cells["finetune"], owner)
    wait_for(checkpointed(run), timeout=90, what="the first checkpoint", worker=worker)
    with worker.paused():  # held still, so the run cannot finish before the kill lands
        saved = max(c["step"] for c in checkpointed(run)())
        assert kill_pool_child(worker, reap=False) == 1

    wait_for(finished(run), timeout=120, what="the resumed run", worker=worker)
    job, run = job_of(run), CellRun.objects.get(pk=run.pk)
    assert job.status == JobStatus.SUCCEEDED, (job.error, worker.tail())
    assert worker.proc.poll() is None  # the same parent handed the task out again
    assert job.deliveries == 2
    resumed = [e.data["step"] for e in job.events.all() if e.data.get("kind") == "resume"]
    # From the newest checkpoint: the one the database had seen, or one written after it.
    assert len(resumed) == 1 and saved <= resumed[0] < steps and resumed[0] % every == 0
    assert [h["step"] for h in run.outputs["history"]] == list(range(1, steps + 1))


def test_a_job_whose_worker_keeps_dying_is_failed_naming_the_memory_estimate(
    start_worker: Callable[..., Worker], team: Any, owner: Any
) -> None:
    limit = settings.JOB_MAX_DELIVERIES
    assert limit == 3  # the default, which the worker processes read too
    worker = start_worker(pool="prefork")
    cells = notebook(team, owner, worker, max_steps=400, eval_every=400, save_every=400)
    run = run_cell(cells["finetune"], owner)
    # Start 1: its pool child dies; the parent hands the task out again at once.
    wait_for(started(run, 1), timeout=90, what="the first start", worker=worker)
    kill_pool_child(worker)
    # Start 2: the whole worker dies; stale-job recovery sends the job to a new one.
    wait_for(started(run, 2), timeout=90, what="the second start", worker=worker)
    worker.kill()
    assert [o.action for o in jobs_recover(stale_after_s=0)] == ["requeued"]
    worker = start_worker(pool="prefork")
    # Start 3 dies too: the task handed out a fourth time fails the job instead.
    wait_for(started(run, 3), timeout=90, what="the third start", worker=worker)
    kill_pool_child(worker)
    wait_for(finished(run), timeout=90, what="the job to fail", worker=worker)

    job, run = job_of(run), CellRun.objects.get(pk=run.pk)
    assert job.status == JobStatus.FAILED and run.status == RunStatus.FAILED, worker.tail()
    assert f"died {limit} times" in job.error and "out-of-memory killer" in job.error
    assert "memory estimate for this run was 0." in job.error and "batch_size" in job.error
    assert job.deliveries == limit
    assert [e.message for e in job.events.all()].count("Job running") == limit
    time.sleep(3)  # the message was acknowledged: not handed out again, nothing recovers it
    assert job.celery_task_id not in (held_task_ids(set(ROUTES.values())) or set())
    assert jobs_recover(stale_after_s=0) == [] and job_of(run).status == JobStatus.FAILED
    assert worker.proc.poll() is None
