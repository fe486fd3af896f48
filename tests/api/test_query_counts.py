"""The hot list endpoints run a fixed number of queries, however many jobs the team has.

`make bench-api` measures them at 200 requests/s: one query per listed job (the N+1 a
deferred field caused) made the job list miss its target by a factor of ten.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from webapp.api.keys import api_key_create, api_key_revoke
from webapp.api.models import FineTuningJob
from webapp.api.v1.services import fine_tuning_job_create
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_mark
from webapp.jobs.services import job_start, job_succeed
from webapp.projects.models import CellRun
from webapp.teams.models import Membership, Team
from webapp.teams.services import team_create

# Key lookup, then the view's reads: /v1/models lists the base models, fine-tuned jobs
# and notebook runs.
MODELS_QUERIES = 5  # + the base models and the workers' records, each read once
JOBS_QUERIES = 2


def _add_jobs(team: Team, user: Any, version: DatasetVersion, count: int, start: int) -> None:
    for i in range(start, start + count):
        ft = fine_tuning_job_create(
            team=team, created_by=user, model="tiny-llama", training_file=version,
            suffix=f"run{i}", seed=i, metadata={"i": str(i)}, hyperparameters={}, extras={},
        )  # fmt: skip
        if i % 2 == 0:  # half succeed: fine-tuned models in /v1/models
            job_start(job_id=ft.job_id, celery_task_id=f"t-{i}")
            job_succeed(job_id=ft.job_id, result={"steps": 10})


def _get(client: Client, key: str, path: str) -> tuple[int, dict[str, Any], int]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {key}")
    return response.status_code, response.json(), len(queries)


@pytest.fixture
def valid_version(dataset_version: DatasetVersion) -> DatasetVersion:
    dataset_version_mark(version_id=dataset_version.pk, status=VersionStatus.VALID)
    dataset_version.refresh_from_db()
    return dataset_version


@pytest.mark.parametrize(
    ("path", "most"), [("/v1/models", MODELS_QUERIES), ("/v1/fine_tuning/jobs", JOBS_QUERIES)]
)
def test_list_queries_do_not_grow_with_jobs(team, owner, valid_version, path, most) -> None:
    _, key = api_key_create(team=team, created_by=owner, name="k")
    client = Client()
    client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}")  # last_used_at is touched once
    counts = []
    for start, count in ((0, 2), (2, 12)):
        _add_jobs(team, owner, valid_version, count, start)
        status, body, queries = _get(client, key, path)
        assert status == 200, body
        counts.append(queries)
    assert counts == [most, most], counts
    if path == "/v1/fine_tuning/jobs":  # pages still page, from the compiled query
        assert len(body["data"]) == 14 and not body["has_more"]
        status, page, queries = _get(client, key, f"{path}?limit=5&after={body['data'][2]['id']}")
        assert queries == most
        assert [j["id"] for j in page["data"]] == [j["id"] for j in body["data"][3:8]]
        assert page["has_more"]
    else:
        fine_tuned = [m["id"] for m in body["data"] if m["id"].startswith("ft:")]
        newest = FineTuningJob.objects.get(suffix="run12").pk  # ids: PostgreSQL never rewinds
        assert len(fine_tuned) == 7 and fine_tuned[0].endswith(f":run12:ftjob-{newest}")


def test_compiled_key_lookup_still_sees_revocation_and_leaving(team, owner, editor) -> None:
    """The key query's SQL is compiled once; its answer is read fresh on every request."""
    key_row, key = api_key_create(team=team, created_by=editor, name="k")
    client = Client()
    assert _get(client, key, "/v1/fine_tuning/jobs")[0] == 200
    api_key_revoke(key=key_row)
    status, body, _ = _get(client, key, "/v1/fine_tuning/jobs")
    assert status == 401 and "revoked" in body["error"]["message"]

    _, key = api_key_create(team=team, created_by=editor, name="k2")
    assert _get(client, key, "/v1/models")[0] == 200
    Membership.objects.filter(team=team, user=editor).delete()
    status, body, _ = _get(client, key, "/v1/models")
    assert status == 401 and "left the team" in body["error"]["message"]


def test_compiled_lists_stay_within_the_team(team, owner, outsider, valid_version) -> None:
    _add_jobs(team, owner, valid_version, 2, 0)
    theirs = team_create(name="Rivals", owner=outsider)
    _, key = api_key_create(team=theirs, created_by=outsider, name="t")
    client = Client()
    assert _get(client, key, "/v1/fine_tuning/jobs")[1]["data"] == []
    models = _get(client, key, "/v1/models")[1]["data"]
    assert not [m for m in models if m["id"].startswith("ft:")]


def _succeeded_run(team: Team, owner: Any, version: DatasetVersion, outputs: dict) -> Any:
    _add_jobs(team, owner, version, 1, 0)  # i = 0: succeeded
    ft = FineTuningJob.objects.get()
    CellRun.objects.filter(pk=ft.cell_run_id).update(outputs=outputs)
    return ft


def _manifest(folder: Path) -> Path:
    folder.mkdir(parents=True)
    manifest = {
        "data": {"train_tokens": 300, "n_train_rows": 10},
        "hyperparameters": {"batch_size": 2, "grad_accum": 2},
        "metrics": {"steps": 5},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder  # 30 tokens a row x 20 rows seen = 600


def test_lists_read_stored_facts_not_the_manifest(team, owner, valid_version, tmp_path) -> None:
    """trained_tokens and checkpoints come from the run's row, in the list's one query."""
    history = [{"step": i, "train_loss": 1.0} for i in range(500)]  # never decoded by lists
    points = [{"step": 2, "train_loss": 1.5}, {"step": 4, "train_loss": 1.2, "val_loss": 1.3}]
    ft = _succeeded_run(
        team, owner, valid_version,
        {"output_dir": str(tmp_path / "gone"), "trained_tokens": 640, "checkpoints": points,
         "history": history},
    )  # fmt: skip
    _, key = api_key_create(team=team, created_by=owner, name="k")
    client = Client()
    client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}")
    status, body, queries = _get(client, key, "/v1/fine_tuning/jobs")
    assert (status, queries) == (200, JOBS_QUERIES)
    assert body["data"][0]["trained_tokens"] == 640
    status, models, queries = _get(client, key, "/v1/models")
    assert (status, queries) == (200, MODELS_QUERIES)
    ours = [
        m["id"] for m in models["data"] if m["id"].endswith(f"ftjob-{ft.pk}") or "ckpt" in m["id"]
    ]
    assert [i.rsplit(":", 1)[-1] for i in ours] == [f"ftjob-{ft.pk}", "ckpt-step-4", "ckpt-step-2"]
    single = client.get(f"/v1/fine_tuning/jobs/ftjob-{ft.pk}", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert single.json()["trained_tokens"] == 640


def test_runs_before_stored_tokens_fall_back_then_backfill(
    team, owner, valid_version, settings
) -> None:
    folder = _manifest(Path(settings.DATA_DIR) / "runs/1")
    ft = _succeeded_run(team, owner, valid_version, {"output_dir": "runs/1"})
    _, key = api_key_create(team=team, created_by=owner, name="k")
    assert _get(Client(), key, "/v1/fine_tuning/jobs")[1]["data"][0]["trained_tokens"] == 600
    # The backfill ran when rows held the run folder's path, before storage keys.
    CellRun.objects.filter(pk=ft.cell_run_id).update(outputs={"output_dir": str(folder)})
    backfill = importlib.import_module("webapp.api.migrations.0003_backfill_trained_tokens")
    backfill.backfill(django_apps, None)
    assert CellRun.objects.get(pk=ft.cell_run_id).outputs["trained_tokens"] == 600
    (folder / "manifest.json").unlink()  # now read from the row alone
    assert _get(Client(), key, "/v1/fine_tuning/jobs")[1]["data"][0]["trained_tokens"] == 600
