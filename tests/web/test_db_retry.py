"""The checks a fine-tune makes at every step survive the database cutting its connection
(a restart, a failover): each one's query is retried on a new connection, so the run goes
on instead of failing with "terminating connection due to administrator command". On
PostgreSQL only, where the server can end one connection of the test's own."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from django.db import connection

from webapp.jobs.models import Job, JobStatus
from webapp.teams.models import Team
from workers.between_steps import BetweenSteps
from workers.reporter import MakeWay, Reporter


def _cut_this_connection() -> None:
    """The server ends this process's connection, as a restart would."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:
        killed = other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
    assert killed


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(lambda job: Reporter(job.pk, "task-1").cancelled, id="the stop check"),
        pytest.param(lambda job: MakeWay(), id="background work making way"),
        pytest.param(lambda job: BetweenSteps("task-1", ["gpu"]), id="answers between steps"),
    ],
)
def test_a_step_check_survives_its_connection_being_cut(
    transactional_db: None, team: Team, check: Callable[[Job], Callable[[], object]]
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL to end a connection (run with DATABASE_URL=postgres://...)")
    job = Job.objects.create(
        team=team, kind="cell.finetune", status=JobStatus.RUNNING, celery_task_id="task-1"
    )
    _cut_this_connection()
    assert not check(job)()  # no error, and nothing to stop or answer
    assert Job.objects.get(pk=job.pk).status == JobStatus.RUNNING  # a new connection works
