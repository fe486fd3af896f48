"""make bench-demo: the demo notebook's fine-tune cell, timed end to end as a user runs it.

What `make run` serves, minus the browser: a fresh SQLite database and file broker in a
temporary folder, `demo_setup`'s notebook (200 BIG-bench sports_understanding examples,
SmolLM2-135M-Instruct, 4-bit, preset quick, one epoch), one real Celery worker in its
own process, and the fine-tune cell queued through the same service the Run button
calls. Prints the time from Run to a finished adapter, the steps, the losses and JSON.
The target (issue 3): within 15 minutes on the 2-core CPU machine.

    python -m benchmarks.bench_demo
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 45 * 60


def _setup(data_dir: str) -> None:
    os.environ["DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    for command in (["migrate", "--noinput", "-v0"], ["demo_setup"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, check=True)
    import django

    django.setup()


def _worker() -> subprocess.Popen:
    celery = [sys.executable, "-m", "celery", "-A", "workers", "worker"]
    options = ["-Q", "default,gpu", "-c", "1", "--pool=solo", "-l", "warning"]
    return subprocess.Popen([*celery, *options], cwd=ROOT)


def _wait(what: str, done: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"{what}: not done after {timeout:.0f} s")
        time.sleep(1.0)
    return time.monotonic() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as data_dir:
        _setup(data_dir)
        from webapp.datasets.models import DatasetVersion
        from webapp.jobs.models import Job
        from webapp.projects.models import Cell
        from webapp.projects.services import cell_run_create

        worker = _worker()
        try:
            version = DatasetVersion.objects.get()
            validate_s = _wait(
                "validation",
                lambda: DatasetVersion.objects.get(pk=version.pk).status in ("valid", "invalid"),
                600,
            )
            cell = Cell.objects.get(kind="finetune")
            run = cell_run_create(cell=cell, created_by=cell.created_by)
            last = [-1]

            def finished() -> bool:
                job = Job.objects.get(pk=run.job_id)
                if job.progress_current != last[0]:
                    last[0] = job.progress_current
                    print(f"  step {job.progress_current}/{job.progress_total} {job.metrics}")
                return job.is_finished

            train_s = _wait("fine-tune", finished, DEADLINE_S)
        finally:
            worker.terminate()
            worker.wait(30)
        job = Job.objects.get(pk=run.job_id)
        version.refresh_from_db()
        stats = version.report.get("stats", {})
        result = {
            "status": job.status,
            "error": job.error,
            "examples": version.n_examples,
            "dataset_tokens": (stats.get("tokens") or {}).get("total"),
            "validation_s": round(validate_s, 1),
            "run_to_adapter_s": round(train_s, 1),
            "steps": job.progress_total,
            "train_loss": job.metrics.get("train_loss"),
            "val_loss": job.metrics.get("val_loss"),
            "load_average": os.getloadavg(),
            "target_s": 15 * 60,
        }
        print(f"Run -> adapter: {train_s / 60:.1f} min, {job.progress_total} steps, {job.status}")
        print(json.dumps(result))
        if job.status != "succeeded":
            raise SystemExit(1)


if __name__ == "__main__":
    main()
