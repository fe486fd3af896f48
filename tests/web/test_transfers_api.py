"""/api/transfers on the native API: create and read transfers, lineage, keep transferable,
re-basing, cancel; the personas' keys (owner, editor, viewer, another team's) and
OpenAI-shaped errors."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
from django.test import Client

from tests.web.test_transfers import make_transferable
from tests.web.test_transfers import source_run as source_run  # fixtures shared with the page tests
from tests.web.test_transfers import transfer_cell as transfer_cell
from tests.web.test_transfers import transfer_run as transfer_run
from webapp.api.keys import api_key_create
from webapp.jobs.models import Job, JobStatus
from webapp.projects.models import Cell, CellRun, RunStatus
from webapp.teams.services import team_create


def call(method: str, path: str, key: str, body: dict[str, Any] | None = None) -> Any:
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    if method == "get":
        return client.get(f"/api{path}", **headers)
    return client.post(f"/api{path}", body or {}, content_type="application/json", **headers)


@pytest.fixture
def keys(team, owner, editor, viewer, outsider) -> dict[str, str]:
    theirs = team_create(name="Rivals", owner=outsider)
    return {
        "owner": api_key_create(team=team, created_by=owner, name="o")[1],
        "editor": api_key_create(team=team, created_by=editor, name="e")[1],
        "viewer": api_key_create(team=team, created_by=viewer, name="v")[1],
        "outsider": api_key_create(team=theirs, created_by=outsider, name="x")[1],
    }


READ = {"owner": 200, "editor": 200, "viewer": 200, "outsider": 404}


@pytest.mark.parametrize("persona", ["owner", "editor", "viewer", "outsider"])
def test_reads_follow_the_team(
    persona: str, keys, transfer_run: CellRun, source_run: CellRun
) -> None:
    key = keys[persona]
    got = call("get", f"/transfers/{transfer_run.pk}", key)
    assert got.status_code == READ[persona]
    lineage = call("get", f"/transfers/lineage/{source_run.pk}", key)
    assert lineage.status_code == READ[persona]
    listed = call("get", f"/transfers?project={transfer_run.cell.project_id}", key)
    assert listed.status_code == READ[persona]
    download = call("get", f"/transfers/{transfer_run.pk}/adapter.zip", key)
    assert download.status_code == READ[persona]
    if persona == "outsider":
        assert set(got.json()["error"]) == {"message", "type", "param", "code"}
        return
    archive = zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content)))
    assert {"adapter/adapter_config.json", "manifest.json", "report.json"} <= set(
        archive.namelist()
    )
    body = got.json()
    assert body["object"] == "transfer" and body["status"] == "succeeded"
    assert body["target_model"] == "gemma-3-270m" and body["acceptance_rate"] == 0.4
    assert body["accuracy"]["transferred"]["accuracy"] == 0.55
    assert body["adapter_download"] == f"/api/transfers/{transfer_run.pk}/adapter.zip"
    assert [s["kind"] for s in body["lineage"]] == ["dataset", "finetune", "checkpoint", "transfer"]
    assert [s["kind"] for s in lineage.json()] == ["dataset", "finetune", "checkpoint"]
    assert [t["id"] for t in listed.json()["data"]] == [transfer_run.pk]


@pytest.mark.parametrize("persona", ["owner", "editor", "viewer", "outsider"])
def test_create_needs_edit_rights_in_the_team(persona: str, keys, source_run: CellRun) -> None:
    body = {
        "project": source_run.cell.project_id,
        "source_cell": source_run.cell_id,
        "target_model": "gemma-3-270m",
        "options": {"n_synthetic": 20, "unfiltered": True},
    }
    response = call("post", "/transfers", keys[persona], body)
    expected = {"owner": 201, "editor": 201, "viewer": 403, "outsider": 404}[persona]
    assert response.status_code == expected
    if expected == 201:
        created = response.json()
        run = CellRun.objects.get(pk=created["id"])
        assert run.cell.kind == "transfer" and run.inputs["n_synthetic"] == 20
        assert run.inputs["unfiltered"] is True and created["status"] == "queued"
    else:
        assert not Cell.objects.filter(kind="transfer").exists()


def test_bad_input_is_a_400_naming_the_field(keys, source_run: CellRun) -> None:
    body = {
        "project": source_run.cell.project_id,
        "source_cell": source_run.cell_id,
        "target_model": "no-such-model",
    }
    bad = call("post", "/transfers", keys["owner"], body)
    assert bad.status_code == 400 and "base_model" in str(bad.json()["error"])


def test_keep_transferable_and_cancel(keys, source_run: CellRun) -> None:
    state = call("get", f"/transfers/transferable/{source_run.pk}", keys["viewer"]).json()
    assert state == {
        "object": "transferable",
        "run": source_run.pk,
        "ready": False,
        "status": None,
        "job": None,
        "data_exists": True,
        "error": None,
    }
    denied = call("post", f"/transfers/transferable/{source_run.pk}", keys["viewer"])
    assert denied.status_code == 403
    started = call("post", f"/transfers/transferable/{source_run.pk}", keys["editor"])
    assert started.status_code == 202 and started.json()["status"] == "queued"
    assert Job.objects.get(pk=started.json()["job"]).kind == "transferable"
    again = call("post", f"/transfers/transferable/{source_run.pk}", keys["editor"])
    assert again.status_code == 400 and "already" in again.json()["error"]["message"]

    make_transferable(source_run)
    body = {"project": source_run.cell.project_id, "source_cell": source_run.cell_id}
    run_id = call("post", "/transfers", keys["owner"], {**body, "target_model": "gemma-3-270m"})
    run_id = run_id.json()["id"]
    cancelled = call("post", f"/transfers/{run_id}/cancel", keys["editor"])
    assert cancelled.status_code == 200 and cancelled.json()["status"] == RunStatus.CANCELLED
    assert Job.objects.get(pk=CellRun.objects.get(pk=run_id).job_id).status == JobStatus.CANCELLED
    twice = call("post", f"/transfers/{run_id}/cancel", keys["editor"])
    assert twice.status_code == 400 and "already finished" in twice.json()["error"]["message"]
    assert call("post", f"/transfers/{run_id}/resume", keys["viewer"]).status_code == 403
    resumed = call("post", f"/transfers/{run_id}/resume", keys["editor"])
    assert resumed.status_code == 200 and resumed.json()["status"] == RunStatus.QUEUED
    assert Job.objects.get(pk=CellRun.objects.get(pk=run_id).job_id).status == JobStatus.QUEUED
    again = call("post", f"/transfers/{run_id}/resume", keys["editor"])
    assert again.status_code == 400 and "still queued" in again.json()["error"]["message"]


def test_rebase_through_the_api(keys, source_run: CellRun) -> None:
    make_transferable(source_run)
    body = {
        "project": source_run.cell.project_id,
        "source_model": "tiny-llama",
        "target_model": "gemma-3-270m",
        "options": {"n_synthetic": 10},
    }
    assert call("post", "/transfers/rebase", keys["viewer"], body).status_code == 403
    done = call("post", "/transfers/rebase", keys["owner"], body)
    assert done.status_code == 201
    created = done.json()["created"]
    assert len(created) == 1 and created[0]["target_model"] == "gemma-3-270m"
    assert CellRun.objects.get(pk=created[0]["id"]).inputs["n_synthetic"] == 10
    same = call("post", "/transfers/rebase", keys["owner"], {**body, "target_model": "tiny-llama"})
    assert same.status_code == 400 and "other than the source" in same.json()["error"]["message"]


def test_schema_lists_the_transfer_endpoints(keys) -> None:
    schema = Client().get("/api/schema/").json()
    assert {"/api/transfers", "/api/transfers/{run_id}", "/api/transfers/rebase"} <= set(
        schema["paths"]
    )


def test_no_adapter_to_download_before_success(keys, transfer_run: CellRun) -> None:
    CellRun.objects.filter(pk=transfer_run.pk).update(status=RunStatus.RUNNING)
    response = call("get", f"/transfers/{transfer_run.pk}/adapter.zip", keys["owner"])
    assert response.status_code == 404 and "no adapter" in response.json()["error"]["message"]
