"""/api/exports over HTTP with a key: start an export of a finished run, read its state,
download its files, cancel; refusals are OpenAI-shaped errors naming the field; an
Idempotency-Key gives the first export back instead of a second one."""

from __future__ import annotations

import hashlib
import io
import zipfile

import requests

from tests.web.export_fixtures import ADAPTER_BYTES, finish_finetune, finished_export
from webapp.api.keys import api_key_create
from webapp.core.models import BaseModel
from webapp.exports.models import Export
from webapp.jobs.models import JobStatus
from webapp.projects.services import cell_run_create

ERROR_KEYS = {"message", "type", "param", "code"}


def _call(method: str, url: str, key: str, body: dict | None = None, **headers: str):
    return requests.request(
        method, url, json=body, headers={"Authorization": f"Bearer {key}", **headers}, timeout=30
    )


def error_of(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    return error


def test_exports_through_the_api(
    live_server, team, owner, viewer, outsider, other_team, cells, cell_run
) -> None:
    base = f"{live_server.url}/api/exports"
    _, key = api_key_create(team=team, created_by=owner, name="ci")
    _, read_only = api_key_create(team=team, created_by=owner, name="ro", read_only=True)
    _, viewer_key = api_key_create(team=team, created_by=viewer, name="v")
    _, theirs = api_key_create(team=other_team, created_by=outsider, name="theirs")
    unfinished = cell_run_create(cell=cells["finetune"], created_by=owner)
    run = finish_finetune(cell_run)

    once = {"Idempotency-Key": "export-1"}
    created = _call("POST", base, key, {"run": run.pk, "format": "gguf", "type": "q8_0"}, **once)
    assert created.status_code == 202, created.text
    body = created.json()
    assert (body["object"], body["status"], body["format"], body["type"]) == (
        "export", "queued", "gguf", "q8_0",
    )  # fmt: skip
    assert body["files"] == [] and body["download"] is None and body["run"] == run.pk
    again = _call("POST", base, key, {"run": run.pk, "format": "gguf", "type": "q8_0"}, **once)
    assert again.json()["id"] == body["id"] and Export.objects.filter(run=run).count() == 1
    other_body = _call("POST", base, key, {"run": run.pk, "format": "adapter"}, **once)
    assert error_of(other_body, 409)["type"] == "conflict_error"

    busy = _call("POST", base, key, {"run": run.pk, "format": "gguf", "type": "q8_0"})
    error = error_of(busy, 409)
    assert error["code"] == "export_in_progress" and f"export #{body['id']}" in error["message"]

    error = error_of(_call("POST", base, key, {"run": unfinished.pk, "format": "adapter"}), 400)
    assert (error["param"], error["code"]) == ("run", "export_unfinished_run")
    assert "only a finished (succeeded) run has a final adapter" in error["message"]
    error = error_of(_call("POST", base, key, {"run": run.pk, "format": "gguf", "type": "q2"}), 400)
    assert (error["param"], error["code"]) == ("type", "export_bad_type")
    error = error_of(_call("POST", base, key, {"run": run.pk, "format": "onnx"}), 400)
    assert (error["param"], error["code"]) == ("format", "export_bad_format")
    error = error_of(_call("POST", base, key, {"run": run.pk}), 400)
    assert error["param"] == "format"
    BaseModel.objects.create(
        name="gpt2-local", label="GPT-2", kind="local", source="/models/gpt2",
        model_type="gpt2", parameters=124_000_000, context_length=1024, licence="MIT",
    )  # fmt: skip
    gpt2 = finish_finetune(
        cell_run_create(cell=cells["finetune"], created_by=owner), base_model="gpt2-local"
    )
    error = error_of(_call("POST", base, key, {"run": gpt2.pk, "format": "gguf"}), 400)
    assert (error["param"], error["code"]) == ("format", "export_unsupported_architecture")
    assert (
        "does not know the gpt2 architecture of gpt2-local; it supports llama" in (error["message"])
    )

    assert error_of(_call("POST", base, read_only, {"run": run.pk, "format": "adapter"}), 403)
    assert error_of(_call("POST", base, viewer_key, {"run": run.pk, "format": "adapter"}), 403)
    error = error_of(_call("POST", base, theirs, {"run": run.pk, "format": "adapter"}), 404)
    assert error["code"] == "not_found"
    assert error_of(_call("GET", f"{base}/{body['id']}", theirs), 404)

    state = _call("GET", f"{base}/{body['id']}", viewer_key).json()
    assert state["status"] == "queued" and state["progress"] == {"percent": None, "stage": ""}
    listed = _call("GET", f"{base}?run={run.pk}", read_only).json()
    assert listed["object"] == "list" and [e["id"] for e in listed["data"]] == [body["id"]]

    assert error_of(_call("POST", f"{base}/{body['id']}/cancel", viewer_key), 403)
    cancelled = _call("POST", f"{base}/{body['id']}/cancel", key)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == JobStatus.CANCELLED
    error = error_of(_call("POST", f"{base}/{body['id']}/cancel", key), 409)
    assert error["code"] == "export_finished"

    done = finished_export(run, owner)
    state = _call("GET", f"{base}/{done.pk}", viewer_key).json()
    assert state["status"] == "succeeded" and state["facts"]["seconds"] == 1.5
    assert all("/tmp/" not in w for w in state["warnings"])  # no server path
    files = {f["name"]: f for f in state["files"]}
    weights = files["adapter_model.safetensors"]
    assert weights["bytes"] == len(ADAPTER_BYTES)
    content = _call("GET", f"{live_server.url}{weights['url']}", viewer_key)
    assert content.status_code == 200 and content.content == ADAPTER_BYTES
    assert hashlib.sha256(content.content).hexdigest() == weights["sha256"]
    assert error_of(_call("GET", f"{live_server.url}{weights['url']}", theirs), 404)
    missing = _call("GET", f"{base}/{done.pk}/files/secret.txt", viewer_key)
    assert error_of(missing, 404)["code"] == "not_found"
    archive = zipfile.ZipFile(
        io.BytesIO(_call("GET", f"{live_server.url}{state['download']}", viewer_key).content)
    )
    assert "adapter-as-trained/export.json" in archive.namelist()
