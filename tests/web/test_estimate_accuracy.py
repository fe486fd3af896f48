"""How close the pre-flight estimate comes to what a real fine-tune takes (issue 27).

A measurement, not a check: it trains SmolLM2-135M six times (minutes on a 2-core CPU),
so pytest deselects it unless asked (`addopts`: `-m 'not measurement'`) and
`make bench-estimate-loop` runs it (`-m measurement`).

Three settings (max_steps, batch_size, max_length differ), each run twice on a real
Celery worker, a fresh worker process per run (its peak memory is the process's): the
first run warms the measured figures, the second is compared with the estimate made
just before it. Time is the job's wall time on the worker (started to finished: loading
the model, training, saving); memory is the peak the worker reported. The table is
printed and written to benchmarks/results/estimates.md.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from tests.web.conftest import Upload, client_for
from tests.web.test_finetune_worker import start_worker  # noqa: F401 - the fixture
from tests.web.worker_harness import wait_for
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create
from webapp.jobs.models import Job, JobStatus
from webapp.projects.estimate import Estimate, estimate
from webapp.projects.models import CellRun
from webapp.projects.services import cell_create, project_create

# A measurement (timed), so never part of make test: `make bench-estimate-loop` runs it.
pytestmark = [pytest.mark.integration, pytest.mark.measurement, pytest.mark.timeout(3600)]

MODEL = "smollm2-135m-instruct"
BASE = {
    "base_model": MODEL,
    "preset": "quick",
    "quantization": "none",
    "lora_r": 8,
    "warmup_ratio": 0.0,
    "val_fraction": 0.02,
    "keep_transferable": False,
}
# Small, as the 2-core machine is shared: batch tokens 256, 512 and 1024.
SETTINGS = {
    "A: 3 steps x 2 x 128": {"max_steps": 3, "batch_size": 2, "max_length": 128},
    "B: 4 steps x 4 x 128": {"max_steps": 4, "batch_size": 4, "max_length": 128},
    "C: 2 steps x 4 x 256": {"max_steps": 2, "batch_size": 4, "max_length": 256},
}
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "estimates.md"
WITHIN = 0.5


def rows() -> bytes:
    """300 conversations of about 94 tokens each (max_length 128 keeps them whole)."""
    lines = []
    for i in range(300):
        story = " ".join(
            f"Item {i}-{j} weighs {i * j % 97} grams and costs {j} coins." for j in range(2)
        )
        msgs = [
            {"role": "user", "content": f"Summarise the list {i}: {story}"},
            {
                "role": "assistant",
                "content": f"List {i} has two items; the heaviest is {i % 97} g.",
            },
        ]
        lines.append(json.dumps({"messages": msgs}))
    return ("\n".join(lines) + "\n").encode()


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _inside(value: float, low: float, high: float) -> bool:
    return low <= value <= high


def test_estimates_are_within_half_of_measured(start_worker, team, owner, editor) -> None:  # noqa: F811
    worker = start_worker()
    version = dataset_version_create(
        team=team,
        name="lists",
        upload=Upload.make("lists.jsonl", rows()),
        created_by=owner,
        preview_model=MODEL,
    )
    wait_for(
        lambda: DatasetVersion.objects.get(pk=version.pk).status == VersionStatus.VALID,
        timeout=300,
        what="dataset validation",
        worker=worker,
    )
    worker.stop()
    version = DatasetVersion.objects.get(pk=version.pk)
    project = project_create(team=team, name="Estimates", created_by=owner)
    ds = cell_create(
        project=project, kind="dataset", config={"dataset": version.dataset_id}, created_by=owner
    )
    table: list[dict[str, Any]] = []
    started_load = os.getloadavg()[0]
    for label, setting in SETTINGS.items():
        config = {**BASE, **setting}
        cell = cell_create(
            project=project,
            kind="finetune",
            config={"dataset_cell": ds.pk, **config},
            created_by=owner,
        )
        for attempt in (1, 2):
            before: Estimate = estimate(config, version)
            worker = start_worker()
            response = client_for(editor).post(reverse("cell_run", args=[cell.pk]))
            assert response.status_code == 302
            run = CellRun.objects.filter(cell=cell).order_by("-version").first()
            wait_for(
                lambda run=run: Job.objects.get(pk=run.job_id).is_finished,
                timeout=1500,
                what=f"{label} run {attempt}",
                worker=worker,
            )
            worker.stop()
            job = Job.objects.get(pk=run.job_id)
            assert job.status == JobStatus.SUCCEEDED, (job.error, worker.tail())
            took = (job.finished_at - job.started_at).total_seconds()
            peak = job.metrics["peak_memory_bytes"]
            table.append(
                {
                    "setting": label,
                    "run": attempt,
                    "estimate": before,
                    "seconds": took,
                    "peak": peak,
                    "time_ok": abs(took - before.seconds) <= WITHIN * took,
                    "memory_ok": abs(peak - before.memory_bytes) <= WITHIN * peak,
                }
            )
            print(label, attempt, before.as_dict(), took, peak, flush=True)
    lines = [
        f"# Pre-flight estimate vs measured ({MODEL}, quantization none)",
        "",
        f"Host: {platform.node()}, {os.cpu_count()} CPUs; load average {started_load:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after (1 minute). Each run on a fresh `celery --pool=solo` worker; time is the job's "
        "started..finished wall time, memory the worker's reported peak "
        "(the process's peak RSS on CPU). `within` is |estimate - measured| <= 50% of measured.",
        "",
        "| setting | run | runs behind the estimate | time estimate (range) | measured time "
        "| within | in range | memory estimate (range) | measured peak | within | in range |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        e = row["estimate"]
        lines.append(
            f"| {row['setting']} | {row['run']} | {e.measured_runs} "
            f"| {e.seconds:.0f} s ({e.seconds_low:.0f}-{e.seconds_high:.0f} s) "
            f"| {row['seconds']:.0f} s | {'yes' if row['time_ok'] else 'no'} "
            f"| {'yes' if _inside(row['seconds'], e.seconds_low, e.seconds_high) else 'no'} "
            f"| {_mib(e.memory_bytes)} ({_mib(e.memory_low)}-{_mib(e.memory_high)}) "
            f"| {_mib(row['peak'])} | {'yes' if row['memory_ok'] else 'no'} "
            f"| {'yes' if _inside(row['peak'], e.memory_low, e.memory_high) else 'no'} |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    warmed = [row for row in table if row["run"] == 2]
    assert all(row["time_ok"] and row["memory_ok"] for row in warmed), "\n".join(lines)
