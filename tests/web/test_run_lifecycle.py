"""The cell run lifecycle services: the run and its job move together, outputs are typed."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from webapp.jobs.models import Job, JobStatus
from webapp.jobs.services import job_fail, job_start
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.run_lifecycle import (
    cell_run_fail,
    cell_run_outputs_merge,
    cell_run_progress,
    cell_run_requeue,
    cell_run_settle,
    cell_run_start,
    cell_runs_follow_job,
    settled_pair,
)
from webapp.projects.run_outputs import (
    FinetuneOutputs,
    OutputsError,
    RunOutputs,
    outputs_check,
    outputs_of,
)
from webapp.projects.services import cell_run_cancel

S, F, C = RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED
Q, R, P = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED


@pytest.mark.parametrize(
    ("outcome", "job_status", "pair"),
    [
        # A result: the run takes it; the job follows only from a live running state.
        (S, R, (S, JobStatus.SUCCEEDED)),
        (S, JobStatus.VALIDATING_FILES, (S, JobStatus.SUCCEEDED)),
        (S, C, (S, None)),
        (S, F, (S, None)),
        (S, None, (S, None)),  # a run without a job
        # A failure: the job fails too, from any state that has not finished.
        (F, R, (F, JobStatus.FAILED)),
        (F, Q, (F, JobStatus.FAILED)),
        (F, P, (F, JobStatus.FAILED)),
        (F, C, (F, None)),
        (F, S, (F, None)),
        # A stop: the run is cancelled only when its job was; else another path owns it.
        (C, C, (C, None)),
        (C, R, (None, None)),
        (C, F, (None, None)),
        (C, Q, (None, None)),
    ],
)
def test_settled_pair_decides_run_and_job_together(outcome, job_status, pair) -> None:
    assert settled_pair(outcome, job_status) == pair


def test_settled_pair_refuses_an_unknown_outcome() -> None:
    with pytest.raises(ValueError, match="unknown run outcome 'queued'"):
        settled_pair(RunStatus.QUEUED, JobStatus.RUNNING)


def _statuses(run: CellRun) -> tuple[str, str]:
    run.refresh_from_db()
    return run.status, Job.objects.get(pk=run.job_id).status


def test_start_moves_both_and_drops_a_duplicate_delivery(cell_run) -> None:
    started = cell_run_start(run_id=cell_run.pk, task_id="first")
    assert started is not None and started.cell.kind == "finetune"
    assert _statuses(cell_run) == (RunStatus.RUNNING, JobStatus.RUNNING)
    assert Job.objects.get(pk=cell_run.job_id).celery_task_id == "first"
    # A second delivery while the first one's heartbeat is fresh: nothing changes.
    assert cell_run_start(run_id=cell_run.pk, task_id="second") is None
    assert Job.objects.get(pk=cell_run.job_id).celery_task_id == "first"
    assert cell_run_start(run_id=cell_run.pk + 1000, task_id="x") is None  # no such run


def test_start_of_a_cancelled_run_does_nothing(cell_run, owner) -> None:
    cell_run_cancel(run=cell_run, by=owner)
    assert cell_run_start(run_id=cell_run.pk, task_id="late") is None
    assert _statuses(cell_run) == (RunStatus.CANCELLED, JobStatus.CANCELLED)


def test_settle_success_stores_outputs_and_the_jobs_result(cell_run) -> None:
    run = cell_run_start(run_id=cell_run.pk, task_id="t")
    outputs = {"output_dir": "/runs/1", "adapter_dir": "/runs/1/adapter", "steps": 4}
    assert cell_run_settle(run=run, outcome=S, outputs=outputs, result={"steps": 4}) == S
    assert _statuses(cell_run) == (S, JobStatus.SUCCEEDED)
    assert cell_run.outputs == outputs and cell_run.finished_at is not None
    assert Job.objects.get(pk=cell_run.job_id).result == {"steps": 4}


def test_fail_keeps_what_was_done_and_the_message_on_both(cell_run) -> None:
    run = cell_run_start(run_id=cell_run.pk, task_id="t")
    cell_run_fail(run=run, error="The dataset is gone.", outputs={"output_dir": "/runs/1"})
    assert _statuses(cell_run) == (F, JobStatus.FAILED)
    assert cell_run.outputs == {"output_dir": "/runs/1", "error": "The dataset is gone."}
    assert Job.objects.get(pk=cell_run.job_id).error == "The dataset is gone."


def test_a_stop_settles_only_a_cancelled_run(cell_run, owner) -> None:
    run = cell_run_start(run_id=cell_run.pk, task_id="t")
    # Taken over by a newer delivery: the outputs are kept, the statuses are not touched.
    job_start(job_id=run.job_id, celery_task_id="newer")
    assert cell_run_settle(run=run, outcome=C, outputs={"steps": 2}) == RunStatus.RUNNING
    assert _statuses(cell_run) == (RunStatus.RUNNING, JobStatus.RUNNING)
    assert cell_run.outputs == {"steps": 2} and cell_run.finished_at is None
    # Cancelled by a user: the run settles as cancelled, with what it had done.
    cell_run_cancel(run=cell_run, by=owner)
    assert cell_run_settle(run=run, outcome=C, outputs={"steps": 3}) == C
    assert _statuses(cell_run) == (C, JobStatus.CANCELLED)
    assert cell_run.outputs == {"steps": 3}


def test_a_result_after_a_cancel_is_kept_and_the_job_stays_cancelled(cell_run, owner) -> None:
    run = cell_run_start(run_id=cell_run.pk, task_id="t")
    cell_run_cancel(run=cell_run, by=owner)
    cell_run_settle(run=run, outcome=S, outputs={"adapter_dir": "/a"}, result={"x": 1})
    assert _statuses(cell_run) == (S, JobStatus.CANCELLED)
    assert Job.objects.get(pk=cell_run.job_id).result == {}


def test_progress_writes_outputs_only_and_refuses_unknown_keys(cell_run) -> None:
    run = cell_run_start(run_id=cell_run.pk, task_id="t")
    cell_run_progress(run=run, outputs={"checkpoints": [{"step": 1}]})
    assert _statuses(cell_run) == (RunStatus.RUNNING, JobStatus.RUNNING)
    with pytest.raises(OutputsError, match="finetune run outputs: unknown key 'adapter'"):
        cell_run_progress(run=run, outputs={"adapter": "/a"})
    with pytest.raises(OutputsError, match="'steps' must be int"):
        cell_run_settle(run=run, outcome=S, outputs={"steps": "4"})
    cell_run.refresh_from_db()
    assert cell_run.outputs == {"checkpoints": [{"step": 1}]}  # the bad writes left no trace
    assert cell_run.status == RunStatus.RUNNING


def test_outputs_merge_keeps_other_keys_and_checks_the_result(cell_run) -> None:
    cell_run_progress(run=cell_run, outputs={"output_dir": "/runs/1"})
    merged = cell_run_outputs_merge(run_id=cell_run.pk, values={"final": "best"})
    assert merged == {"output_dir": "/runs/1", "final": "best"}
    with pytest.raises(OutputsError, match="'transferable' must be dict"):
        cell_run_outputs_merge(run_id=cell_run.pk, values={"transferable": "yes"})
    cell_run.refresh_from_db()
    assert cell_run.outputs == merged


@pytest.mark.parametrize(
    ("kind", "outputs", "error"),
    [
        ("finetune", {"train_loss": 1}, None),  # an int is a fine float
        ("finetune", {"train_loss": None, "final": "last"}, None),
        ("finetune", {"best_step": True}, "'best_step' must be int | None, got bool"),
        ("finetune", {"checkpoints": {}}, "'checkpoints' must be list"),
        ("transfer", {"phases": {}, "report": {"accuracy": {}}}, None),
        ("transfer", {"history": []}, "transfer run outputs: unknown key 'history'"),
        ("evaluation", {"evaluation_id": 3, "proposal": None, "errors": 0}, None),
        ("playground", {"model": "m", "answers": [], "messages": []}, None),
        ("playground", {"answers": "hi"}, "'answers' must be list"),
        ("dataset", {"error": "NotImplementedError: no"}, None),  # kinds without a record
        ("dataset", {"rows": 3}, "dataset run outputs: unknown key 'rows'"),
    ],
)
def test_outputs_check_by_kind(kind, outputs, error) -> None:
    if error is None:
        assert outputs_check(kind, outputs) is outputs
    else:
        with pytest.raises(OutputsError, match=error):
            outputs_check(kind, outputs)


def test_outputs_read_back_by_attribute(cell_run) -> None:
    # A row an older worker wrote may hold a key no record declares: the page still opens.
    CellRun.objects.filter(pk=cell_run.pk).update(
        outputs={"adapter_dir": "/a", "checkpoints": [{"step": 2}], "retired": 1}
    )
    cell_run.refresh_from_db()
    read = outputs_of(cell_run)
    assert isinstance(read, FinetuneOutputs)
    assert (read.adapter_dir, read.checkpoints, read.output_dir) == ("/a", [{"step": 2}], None)
    assert not hasattr(read, "retired")
    dataset_cell = cell_run.cell.project.cells.get(kind="dataset")
    other = outputs_of(CellRun(cell=dataset_cell, version=1, outputs={"error": "no"}))
    assert type(other) is RunOutputs and other.error == "no"


def test_runs_follow_a_job_stopped_elsewhere_and_requeue_with_it(cell_run, owner) -> None:
    run = cell_run_start(run_id=cell_run.pk, task_id="t")
    job = Job.objects.get(pk=run.job_id)
    job_fail(job_id=job.pk, error="stale")  # recovery's path: the signal moves the run
    assert _statuses(cell_run) == (F, JobStatus.FAILED)
    assert cell_run.finished_at == Job.objects.get(pk=job.pk).finished_at
    # A run its runner settled keeps its word when the job stops later.
    assert cell_runs_follow_job(job=Job(pk=job.pk, status=C)) == 0
    requeued = cell_run_requeue(run=run, job=Job.objects.get(pk=job.pk), reason="again")
    assert requeued.status == JobStatus.QUEUED
    assert _statuses(cell_run) == (RunStatus.QUEUED, JobStatus.QUEUED)
    assert cell_run.finished_at is None
    with pytest.raises(ValidationError, match="still queued or running"):
        cell_run_requeue(run=run, job=requeued, reason="twice")
    assert _statuses(cell_run) == (RunStatus.QUEUED, JobStatus.QUEUED)
