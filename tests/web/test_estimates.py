"""Pre-flight estimates from measured figures (issue 27): a fine-tune that settles
SUCCEEDED refreshes what the next estimate of its model uses; the estimate shows a
range and what it assumes, on the notebook and in the /v1 job."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.web.conftest import client_for
from webapp.api.keys import api_key_create
from webapp.api.models import FineTuningJob
from webapp.api.v1.services import fine_tuning_job_create
from webapp.core.catalog import model_info
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.jobs.models import Job, JobEvent
from webapp.jobs.services import job_event_add, job_progress
from webapp.projects.estimate import (
    CATALOG_FASTER,
    CATALOG_SLOWER,
    CATALOG_STARTUP_S,
    ESTIMATE,
    Estimate,
    estimate,
)
from webapp.projects.models import CellRun, MeasuredThroughput, RunStatus
from webapp.projects.run_lifecycle import cell_run_fail, cell_run_settle, cell_run_start
from webapp.projects.services import cell_create, cell_run_create
from webapp.projects.throughput import Figures

SMOL, GEMMA = "smollm2-135m-instruct", "gemma-3-270m"
CONFIG = {"base_model": SMOL, "preset": "quick", "batch_size": 10, "max_length": 512}
GIB = 2**30


@pytest.fixture
def version(dataset_version: DatasetVersion) -> DatasetVersion:
    """100 examples of ~100 tokens: 90 train, packed 5 a row into 18 rows, 2 steps."""
    DatasetVersion.objects.filter(pk=dataset_version.pk).update(
        status=VersionStatus.VALID,
        n_examples=100,
        report={"ok": True, "stats": {"rows": 100, "approx_tokens": {"total": 10_000, "max": 400}}},
    )
    return DatasetVersion.objects.get(pk=dataset_version.pk)


def _cell(cells: dict[str, Any], owner: Any, **config: Any) -> Any:
    return cell_create(
        project=cells["finetune"].project,
        kind="finetune",
        config={"dataset_cell": cells["dataset"].pk, **CONFIG, **config},
        created_by=owner,
    )


def _finish(
    cell: Any,
    owner: Any,
    version: DatasetVersion,
    *,
    loading_s: float,
    train_s: float,
    saving_s: float,
    peak: int,
    outcome: str = RunStatus.SUCCEEDED,
) -> CellRun:
    """A run through the real services: queued, started by a worker, its engine's start
    and done events and its last metrics written, then settled with `outcome`."""
    queued = cell_run_create(cell=cell, created_by=owner)
    run = cell_run_start(run_id=queued.pk, task_id="worker-1")
    assert run is not None
    job = Job.objects.get(pk=run.job_id)
    steps = job.params[ESTIMATE]["steps"]
    job_progress(
        job_id=job.pk,
        current=steps,
        total=steps,
        message="done",
        metrics={"device": "cpu", "peak_memory_bytes": peak, "tokens_per_s": 1.0},
    )
    start = job_event_add(job=job, message="start", data={"kind": "start", "step": 0})
    done = job_event_add(job=job, message="done", data={"kind": "done", "step": steps})
    # The clock: started, loaded the model, trained, saved, and is settling now.
    now = timezone.now()
    began = now - timedelta(seconds=loading_s + train_s + saving_s)
    Job.objects.filter(pk=job.pk).update(started_at=began)
    JobEvent.objects.filter(pk=start.pk).update(created_at=began + timedelta(seconds=loading_s))
    JobEvent.objects.filter(pk=done.pk).update(created_at=now - timedelta(seconds=saving_s))
    outputs = {"dataset_version": version.pk, "output_dir": f"runs/{job.pk}", "steps": steps}
    if outcome == RunStatus.FAILED:
        cell_run_fail(run=run, error="boom", outputs=outputs)
    else:
        assert cell_run_settle(run=run, outcome=outcome, outputs=outputs, result={}) == outcome
    return run


def _contains(e: Estimate) -> None:
    assert e.seconds_low <= e.seconds <= e.seconds_high
    assert e.memory_low <= e.memory_bytes <= e.memory_high


def test_a_finished_run_updates_the_figures_the_next_estimate_uses(cells, owner, version) -> None:
    gemma_before = estimate({**CONFIG, "base_model": GEMMA}, version)
    before = estimate(CONFIG, version)
    # No run yet: the catalog's idle-CPU figure, said so, with a range up from it.
    rate = model_info(SMOL)["tokens_per_s_cpu"]
    # Loading, then the tokens at the catalog's rate.
    assert before.measured_runs == 0 and before.seconds == pytest.approx(
        CATALOG_STARTUP_S + 9000 / rate
    )
    assert "No run of smollm2-135m-instruct has finished" in before.basis
    assert "idle 2-core CPU" in before.basis and "catalog" in before.basis
    assert before.seconds_high == pytest.approx(8 * before.seconds)
    _contains(before)

    cell = _cell(cells, owner)
    _finish(cell, owner, version, loading_s=20, train_s=100, saving_s=10, peak=3 * GIB)
    after = estimate(CONFIG, version)
    assert (after.steps, after.tokens) == (before.steps, before.tokens)
    # 30 s of loading and saving around 9000 tokens in 100 s; the peak the worker saw.
    assert after.seconds == pytest.approx(130, abs=2)
    assert after.memory_bytes == pytest.approx(3 * GIB, rel=0.001)
    assert after.measured_runs == 1
    assert "Based on 1 earlier run of smollm2-135m-instruct (nf4) on the gpu workers (cpu)" in (
        after.basis
    )
    assert "90 tokens/s" in after.basis and "~30 s loading and saving" in after.basis
    _contains(after)
    assert after.seconds_low < 0.75 * after.seconds and after.seconds_high > 1.25 * after.seconds
    # Twice the steps: twice the training time, the same start-up.
    longer = estimate({**CONFIG, "max_steps": 4}, version)
    assert longer.seconds == pytest.approx(30 + 200, abs=3)
    # Another model's estimate is as it was.
    assert estimate({**CONFIG, "base_model": GEMMA}, version) == gemma_before

    # A second run, slower: the figures are the runs' medians, the range spans both.
    _finish(cell, owner, version, loading_s=40, train_s=200, saving_s=10, peak=3 * GIB)
    again = estimate(CONFIG, version)
    assert again.measured_runs == 2 and "Based on 2 earlier runs" in again.basis
    assert 130 < again.seconds < 250
    assert again.seconds_high >= 250 - 2 and again.seconds_low <= 130
    _contains(again)
    row = MeasuredThroughput.objects.get()
    assert (row.lane, row.device, row.base_model, row.quantization) == ("gpu", "cpu", SMOL, "nf4")
    assert [r["steps"] for r in row.runs] == [2, 2]


def test_a_failed_run_adds_no_figures(cells, owner, version) -> None:
    cell = _cell(cells, owner)
    _finish(
        cell,
        owner,
        version,
        loading_s=20,
        train_s=100,
        saving_s=10,
        peak=GIB,
        outcome=RunStatus.FAILED,
    )
    assert not MeasuredThroughput.objects.exists()
    assert estimate(CONFIG, version).measured_runs == 0


def test_memory_fits_fixed_and_per_token_parts_once_runs_differ() -> None:
    runs = (
        {"tokens": 1000, "train_s": 10, "startup_s": 5, "batch_tokens": 1000, "peak_bytes": GIB},
        {
            "tokens": 1000,
            "train_s": 10,
            "startup_s": 5,
            "batch_tokens": 3000,
            "peak_bytes": 2 * GIB,
        },
    )
    figures = Figures(lane="gpu", device="cuda", runs=runs)
    memory = figures.memory(5000, lambda tokens: 1.0)  # the formula is not needed here
    assert memory.value == pytest.approx(3 * GIB)  # 0.5 GiB fixed + 0.5 GiB per 1000 tokens
    assert memory.low < memory.value < memory.high
    # One batch size only: the formula's shape, scaled to the measured peak (here the
    # formula says 1.5 GiB at 1000 tokens and 2 GiB at 2000, and 1 GiB was measured).
    formula = lambda tokens: GIB + tokens * GIB / 2000  # noqa: E731
    same = Figures(lane="gpu", device="cuda", runs=runs[:1]).memory(2000, formula)
    assert same.value == pytest.approx(GIB * 2 / 1.5)
    # A run that skipped checkpointing (memory was plentiful) took more than a run needs:
    # it counts only while no checkpointed run was measured.
    unchecked = runs[0] | {"peak_bytes": 4 * GIB, "checkpointed": False, "batch_tokens": 1000}
    both = Figures(lane="gpu", device="cuda", runs=(runs[0], unchecked)).memory(1000, formula)
    assert both.value == pytest.approx(GIB)
    alone = Figures(lane="gpu", device="cuda", runs=(unchecked,)).memory(1000, formula)
    assert alone.value == pytest.approx(4 * GIB)


def test_the_notebook_and_the_api_show_the_range_and_the_basis(
    cells, owner, viewer, team, version
) -> None:
    cell = _cell(cells, owner)
    page = client_for(viewer).get(reverse("project_detail", args=[cell.project.pk]))
    text = page.content.decode()
    assert "Pre-flight estimate" in text and "idle 2-core CPU" in text
    seconds = (
        CATALOG_STARTUP_S + 9000 / model_info(SMOL)["tokens_per_s_cpu"]
    )  # loading, then the catalog's rate
    shown = estimate(CONFIG, version).time_range_text
    as_text = lambda s: f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"  # noqa: E731
    assert (
        shown == f"{as_text(CATALOG_FASTER * seconds)} to {as_text(CATALOG_SLOWER * seconds)}"
        and shown in text
    )

    _finish(cell, owner, version, loading_s=20, train_s=100, saving_s=10, peak=3 * GIB)
    text = client_for(viewer).get(reverse("project_detail", args=[cell.project.pk])).content
    assert "Based on 1 earlier run" in text.decode() and "3.0\xa0GB" in text.decode()

    ft = fine_tuning_job_create(
        team=team,
        created_by=owner,
        model=SMOL,
        training_file=version,
        suffix="",
        seed=None,
        metadata={},
        hyperparameters={"batch_size": 10},
        extras={"max_length": 512, "quantization": "nf4"},
    )
    api = Client(
        HTTP_AUTHORIZATION=f"Bearer {api_key_create(team=team, created_by=owner, name='ci')[1]}"
    )
    url = reverse("api_job", args=[f"ftjob-{ft.pk}"])
    body = api.get(url).json()
    shown = body["tunebook"]["estimate"]
    assert shown["measured_runs"] == 1 and "Based on 1 earlier run" in shown["basis"]
    assert shown["seconds_low"] <= shown["seconds"] <= shown["seconds_high"]
    assert shown["memory_low"] <= shown["memory_bytes"] <= shown["memory_high"]
    assert body["estimated_finish"] is None  # queued: no finish yet
    listed = api.get(reverse("api_jobs")).json()["data"][0]
    assert listed["tunebook"]["estimate"] == shown
    cell_run_start(run_id=ft.cell_run_id, task_id="worker-2")
    running = api.get(url).json()
    started = FineTuningJob.objects.get(pk=ft.pk).job.started_at.timestamp()
    assert running["estimated_finish"] == int(started + shown["seconds"])


def test_time_comes_from_runs_of_the_nearest_batch_size() -> None:
    """A CPU trains big batches faster a token: the rate is taken from runs of a like batch."""
    small = {"tokens": 500, "train_s": 10, "startup_s": 30, "batch_tokens": 256}  # 50 tokens/s
    big = {"tokens": 4000, "train_s": 20, "startup_s": 40, "batch_tokens": 2048}  # 200 tokens/s
    figures = Figures(lane="gpu", device="cpu", runs=(small, big))
    assert figures.seconds(8000, 4096).value == pytest.approx(35 + 8000 / 200)
    assert figures.seconds(8000, 128).value == pytest.approx(35 + 8000 / 50)
    assert figures.seconds(8000).value == pytest.approx(35 + 8000 / 125)  # no batch: all runs
