"""Faults a fine-tune survives (issue 20, "Faults to survive"), each on real services: the
broker's Redis restarted without persistence mid-run, and the database restarted mid-run.
Each restarts a server of the test's own; the run still ends succeeded with every step
once, in order. And the worker's disk full mid-run, on a small tmpfs of the test's own: the
run fails with a message that says what to do, and resumes once there is room."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.urls import reverse

from tests.tmpfs import fill, kept_full, small_tmpfs
from tests.web.conftest import CHAT_JSONL, Upload, client_for
from tests.web.own_servers import PostgresCluster, RedisServer
from tests.web.test_finetune_worker import checkpointed, finished, job_of, notebook, run_cell
from tests.web.worker_harness import (
    Worker,
    broker,
    run_with_sqlite_broker,
    wait_for,
    worker_broker_url,
)
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create
from webapp.jobs.models import Job, JobStatus
from webapp.projects.models import CellRun, RunStatus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STEPS = 300
RESTART_AFTER = 3


def step_events(job: Job) -> list[int]:
    events = job.events.order_by("pk")
    return [e.data["step"] for e in events if e.data.get("kind") == "step"]


def assert_continuous(run: CellRun, worker: Worker) -> None:
    """Succeeded, with every step of the run once and in order, in its history and events."""
    job, run = job_of(run), CellRun.objects.get(pk=run.pk)
    assert job.status == JobStatus.SUCCEEDED, (job.error, worker.tail())
    assert run.status == RunStatus.SUCCEEDED
    assert [h["step"] for h in run.outputs["history"]] == list(range(1, STEPS + 1))
    steps = step_events(job)
    assert steps == sorted(set(steps)) and steps[-1] == STEPS, steps


def test_a_redis_restart_mid_run_loses_no_step(
    own_redis: RedisServer, transactional_db: None, team: Any, owner: Any, tmp_path: Path
) -> None:
    worker = Worker(
        broker_url=own_redis.url,
        data_dir=tmp_path,
        media_root=tmp_path / "media",
        log=tmp_path / "worker.log",
    )
    try:
        cells = notebook(team, owner, worker, max_steps=STEPS, eval_every=100, save_every=100)
        run = run_cell(cells["finetune"], owner)
        wait_for(
            lambda: job_of(run).progress_current >= RESTART_AFTER,
            timeout=120,
            what=f"step {RESTART_AFTER}",
            worker=worker,
        )
        # The worker holds still while the broker restarts, so the restart lands mid-run
        # however fast the steps are (300 steps once finished before a restart did); it
        # then finds its connection gone, as after any outage.
        with worker.paused():
            own_redis.restart()  # the queues and the run's unacknowledged message are gone
        assert job_of(run).progress_current < STEPS, "the restart must land mid-run"
        wait_for(finished(run), timeout=180, what="the run to finish", worker=worker)
        assert_continuous(run, worker)
        # The worker is back on the restarted broker: it takes the next job.
        version = dataset_version_create(
            team=team, name="after", upload=Upload.make("c.jsonl", CHAT_JSONL), created_by=owner
        )
        wait_for(
            lambda: DatasetVersion.objects.get(pk=version.pk).status == VersionStatus.VALID,
            timeout=60,
            what="a job sent after the restart",
            worker=worker,
        )
    finally:
        worker.stop()


def start_finetune() -> None:
    """In a fresh Django process on the test's own cluster: a team, its dataset validated by
    the worker, and a fine-tune queued; prints the run's and the job's ids."""
    from tests.web.conftest import make_user
    from webapp.projects.services import cell_run_create
    from webapp.teams.services import team_create

    owner = make_user("olga")
    team = team_create(name="Lab", owner=owner)
    cells = notebook(team, owner, None, max_steps=STEPS, eval_every=100, save_every=100)
    run = cell_run_create(cell=cells["finetune"], created_by=owner)
    print(json.dumps({"run": run.pk, "job": run.job_id}))


@pytest.mark.own_servers  # its own PostgreSQL cluster and a SQLite broker, in either run
def test_a_postgres_restart_mid_run_delays_progress_and_fails_nothing(
    own_postgres: PostgresCluster, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": own_postgres.url}
    migrate = (  # and the built-in models registered, as `make run` does
        "from django.core.management import call_command as c; c('migrate', verbosity=0); "
        "from workers.catalog import register_builtins; register_builtins()"
    )
    code = "import django; django.setup(); "
    assert run_with_sqlite_broker(code + migrate, tmp_path, **env).returncode == 0
    worker = Worker(
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",  # run_with_sqlite_broker's
        data_dir=tmp_path,
        media_root=tmp_path / "media",
        log=tmp_path / "worker.log",
        database=own_postgres.url,
    )
    sql = own_postgres.url.replace("postgres://", "postgresql://")

    def job() -> tuple[str, int, str]:
        with psycopg.connect(sql) as db:
            query = "SELECT status, progress_current, error FROM jobs_job WHERE id = %s"
            return db.execute(query, [ids["job"]]).fetchone()

    try:
        driver = code + "from tests.web.test_faults_survived import start_finetune as s; s()"
        started = run_with_sqlite_broker(driver, tmp_path, **env)
        assert started.returncode == 0, started.stderr[-3000:]
        ids = json.loads(started.stdout.splitlines()[-1])
        wait_for(lambda: job()[1] >= RESTART_AFTER, timeout=120, what="steps", worker=worker)
        own_postgres.restart()  # every connection is cut, the worker's too
        wait_for(lambda: job()[0] != JobStatus.RUNNING, timeout=180, what="the end", worker=worker)
        assert "database unreachable" in worker.tail(100_000)  # it was hit, mid-run
        with psycopg.connect(sql) as db:
            run = db.execute(
                "SELECT status, outputs FROM projects_cellrun WHERE id = %s", [ids["run"]]
            ).fetchone()
            events = db.execute(
                "SELECT data FROM jobs_jobevent WHERE job_id = %s ORDER BY id", [ids["job"]]
            ).fetchall()
        assert job()[0] == JobStatus.SUCCEEDED, (job(), worker.tail())
        assert run[0] == RunStatus.SUCCEEDED
        assert [h["step"] for h in run[1]["history"]] == list(range(1, STEPS + 1))
        steps = [data["step"] for (data,) in events if data.get("kind") == "step"]
        assert steps == sorted(set(steps)) and steps[-1] == STEPS, steps
    finally:
        worker.stop()


DISK_STEPS, SAVE_EVERY, KEEP = 120, 4, 2  # enough steps that the disk fills mid-run


def pruned(run: CellRun) -> Callable[[], bool]:
    """True once the run has saved more checkpoints than it keeps."""
    saved = checkpointed(run)
    return lambda: any(c["step"] > KEEP * SAVE_EVERY for c in saved() or [])


def test_a_full_disk_mid_run_fails_it_clearly_and_resume_continues_from_the_checkpoint(
    transactional_db: None, team: Any, owner: Any, editor: Any, settings: Any, tmp_path: Path
) -> None:
    """DATA_DIR/runs, where the worker writes run folders, is a 16 MiB tmpfs. Once the engine
    has pruned a checkpoint (the operator keeps KEEP), a ballast file fills it and keeps it
    full: the next checkpoint cannot be written."""
    settings.TEAM_CHECKPOINTS_KEPT = KEEP  # cell_run_create puts it in the run's inputs
    broker_url = worker_broker_url(tmp_path)
    with small_tmpfs(tmp_path / "runs", 16 * 1024) as runs, broker(broker_url):
        worker = Worker(
            broker_url=broker_url,
            data_dir=tmp_path,
            media_root=tmp_path / "media",
            log=tmp_path / "worker.log",
        )
        try:
            cells = notebook(
                team, owner, worker, max_steps=DISK_STEPS, eval_every=DISK_STEPS,
                save_every=SAVE_EVERY,
            )  # fmt: skip
            run = run_cell(cells["finetune"], editor)
            wait_for(pruned(run), timeout=120, what="a pruned checkpoint", worker=worker)
            with worker.paused():  # the run cannot finish while the disk fills
                ballast = fill(runs)
            with kept_full(ballast):
                wait_for(finished(run), timeout=120, what="the run to stop", worker=worker)

            # Failed once, not retried, with a message for people rather than a traceback.
            job, run = job_of(run), CellRun.objects.get(pk=run.pk)
            assert job.status == JobStatus.FAILED, (job.status, job.error, worker.tail())
            assert run.status == RunStatus.FAILED and job.deliveries == 1
            kept = run.outputs["checkpoints"][-1]["step"]
            assert kept > KEEP * SAVE_EVERY  # the engine had pruned the first by then
            failed_at = kept + SAVE_EVERY  # progress is written at most once a second
            assert kept <= job.progress_current <= failed_at < DISK_STEPS, worker.tail()
            folder = runs / str(job.pk)
            assert job.error == run.outputs["error"]
            assert job.error.startswith(
                f"Worker {socket.gethostname()}: The disk holding {folder} is full "
                f"(No space left on device) while saving the checkpoint at step {failed_at}: "
            ), job.error
            assert "free there, a checkpoint takes about" in job.error
            assert (
                f"Nothing half-written was kept and the checkpoint at step {kept} is complete. "
                f"Free space on that disk, then resume the run: it continues from step {kept}."
            ) in job.error
            assert "Traceback" not in job.error and "SafetensorError" not in job.error
            assert "Traceback" not in worker.tail(100_000)
            page = client_for(editor).get(reverse("run_detail", args=[run.pk])).content.decode()
            assert f"The disk holding runs/{job.pk} is full" in page
            assert "Resume from last checkpoint" in page

            # No half-written checkpoint, visible or staged: every step folder is complete.
            steps = list(range(SAVE_EVERY, kept + 1, SAVE_EVERY))[-KEEP:]
            names = sorted(p.name for p in (folder / "checkpoints").iterdir())
            assert names == [f"step-{s:06d}" for s in steps], names
            assert all((folder / "checkpoints" / n / "trainer_state.json").is_file() for n in names)
            assert not [p for p in folder.rglob(".*")], list(folder.rglob(".*"))
            assert not (folder / "manifest.json").exists()

            # Room again: Resume, as a person does, continues from the last checkpoint.
            ballast.unlink()
            resumed = client_for(editor).post(reverse("run_resume", args=[run.pk]), follow=True)
            assert "Resume queued" in resumed.content.decode()
            wait_for(finished(run), timeout=180, what="the resumed run", worker=worker)
            job, run = job_of(run), CellRun.objects.get(pk=run.pk)
            assert job.status == JobStatus.SUCCEEDED, (job.error, worker.tail())
            assert run.status == RunStatus.SUCCEEDED and not job.error
            events = list(job.events.order_by("pk"))
            resumes = [e.data["step"] for e in events if e.data.get("kind") == "resume"]
            starts = [e.data["step"] for e in events if e.data.get("kind") == "start"]
            assert resumes == [kept] and starts == [0, kept]  # not from step 0
            assert run.outputs["steps"] == DISK_STEPS
            assert [h["step"] for h in run.outputs["history"]] == list(range(1, DISK_STEPS + 1))
            assert (folder / "manifest.json").is_file()
            assert (folder / "adapter" / "adapter_model.safetensors").is_file()
        finally:
            worker.stop()
