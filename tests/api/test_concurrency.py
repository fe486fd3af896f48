"""Concurrent first requests of a team, on PostgreSQL (make test-web-pg runs it)."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from django.db import connection, transaction

from webapp.api.models import ApiProject, FineTuningJob
from webapp.datasets.models import VersionStatus
from webapp.datasets.services import dataset_version_mark
from webapp.projects.models import Project


def _waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        # Inside a transaction, statistics views keep their first snapshot unless cleared.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0]


def test_two_first_fine_tuning_jobs_of_a_team_both_succeed(
    live_server, transactional_db, owner_key, dataset_version
) -> None:
    """Both requests find no API notebook yet. The test holds the projects table so that
    both are past that check before either creates one, then lets them go together."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL's row locks (run with DATABASE_URL=postgres://...)")
    dataset_version_mark(version_id=dataset_version.pk, status=VersionStatus.VALID)
    body = {"model": "tiny-llama", "training_file": f"file-{dataset_version.pk}"}
    answers: list[requests.Response] = []

    def create() -> None:
        answers.append(
            requests.post(
                f"{live_server.url}/v1/fine_tuning/jobs",
                json=body,
                headers={"Authorization": f"Bearer {owner_key}"},
                timeout=60,
            )
        )

    threads = [threading.Thread(target=create) for _ in range(2)]
    with transaction.atomic():
        with connection.cursor() as cursor:  # reads go on; creating a project waits
            cursor.execute(f"LOCK TABLE {Project._meta.db_table} IN EXCLUSIVE MODE")
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while _waiting_on_locks() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _waiting_on_locks() == 2, "both requests should be waiting by now"
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200, 200], [a.text for a in answers]
    assert ApiProject.objects.count() == 1 and FineTuningJob.objects.count() == 2
    assert len({a.json()["id"] for a in answers}) == 2
