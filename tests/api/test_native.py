"""The native /api/: Bearer keys, access rules, OpenAI-shaped errors, schema and docs offline."""

from __future__ import annotations

import requests

from webapp.api.keys import api_key_create
from webapp.projects.models import Project
from webapp.teams.models import Membership

ERROR_KEYS = {"message", "type", "param", "code"}


def _get(url: str, key: str | None = None, **kw) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.get(url, headers=headers, timeout=30, **kw)


def _post(url: str, key: str, body: dict, **headers: str) -> requests.Response:
    return requests.post(
        url, json=body, headers={"Authorization": f"Bearer {key}", **headers}, timeout=30
    )


def test_schema_and_docs_work_offline(live_server) -> None:
    schema = _get(f"{live_server.url}/api/schema/").json()
    assert schema["openapi"].startswith("3.") and "/api/projects" in schema["paths"]
    assert schema["components"]["securitySchemes"]["KeyAuth"]["scheme"] == "bearer"
    post_params = schema["paths"]["/api/projects"]["post"]["parameters"]
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= post_params[0].items()
    docs = _get(f"{live_server.url}/api/docs/")
    assert docs.status_code == 200
    html = docs.text
    # Every script and stylesheet is served by us: no CDN.
    assert "cdn." not in html and "unpkg" not in html and "/static/ninja/swagger-ui" in html
    assert _get(f"{live_server.url}/static/ninja/swagger-ui-bundle.js").status_code == 200
    # Built once per process: the second answer is the same document.
    assert _get(f"{live_server.url}/api/schema/").json() == schema


def test_teams_and_projects_follow_the_access_rules(
    live_server, team, owner, viewer, outsider, other_team
) -> None:
    base = f"{live_server.url}/api"
    _, key = api_key_create(team=team, created_by=owner, name="ci")
    _, read_only = api_key_create(team=team, created_by=owner, name="ro", read_only=True)
    _, viewer_key = api_key_create(team=team, created_by=viewer, name="v")
    _, theirs = api_key_create(team=other_team, created_by=outsider, name="theirs")

    missing = _get(f"{base}/teams")
    assert missing.status_code == 401 and set(missing.json()["error"]) == ERROR_KEYS
    assert missing.headers["x-should-retry"] == "false"
    assert _get(f"{base}/teams", "tb-bogus-key-123").json()["error"]["code"] == "invalid_api_key"

    teams = _get(f"{base}/teams", key).json()
    assert [t["id"] for t in teams["data"]] == [team.pk] and teams["data"][0]["role"] == "owner"
    assert _get(f"{base}/teams/{other_team.pk}", key).status_code == 404

    created = _post(f"{base}/projects", key, {"name": "Via API"})
    assert created.status_code == 201 and created.json()["team"] == team.pk
    pid = created.json()["id"]
    assert Project.objects.get(pk=pid).name == "Via API"
    assert _get(f"{base}/projects/{pid}", read_only).json()["name"] == "Via API"

    denied = _post(f"{base}/projects", read_only, {"name": "no"})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "read_only_key"
    assert _post(f"{base}/projects", viewer_key, {"name": "no"}).status_code == 403
    hidden = _get(f"{base}/projects/{pid}", theirs)
    assert hidden.status_code == 404 and set(hidden.json()["error"]) == ERROR_KEYS
    assert _get(f"{base}/projects", theirs).json()["data"] == []

    bad = _post(f"{base}/projects", key, {"name": ""})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "name"
    over = _get(f"{base}/projects?limit=1000", key)
    assert over.status_code == 400 and over.json()["error"]["param"] == "limit"

    # A key stops working when its user leaves the team.
    assert _get(f"{base}/teams", viewer_key).status_code == 200
    Membership.objects.filter(team=team, user=viewer).delete()
    gone = _get(f"{base}/teams", viewer_key)
    assert gone.status_code == 401 and "left the team" in gone.json()["error"]["message"]


def _call(method: str, url: str, key: str, body: dict | None = None, **headers: str):
    return requests.request(
        method, url, json=body, headers={"Authorization": f"Bearer {key}", **headers}, timeout=30
    )


def test_concurrent_cell_edits_report_the_conflict_instead_of_overwriting(
    live_server, team, owner, cells
) -> None:
    """Two clients edit the same cell from the version they read: the second save is a 409
    naming the version it is at, and the first one's edit is kept."""
    url = f"{live_server.url}/api/cells/{cells['markdown'].pk}"
    _, key = api_key_create(team=team, created_by=owner, name="ci")
    seen = _call("GET", url, key).json()["version"]
    first = _call("PATCH", url, key, {"config": {"text": "mine"}, "version": seen})
    assert first.status_code == 200 and first.json()["version"] == seen + 1
    second = _call("PATCH", url, key, {"config": {"text": "theirs"}, "version": seen})
    assert second.status_code == 409, second.text
    error = second.json()["error"]
    assert error["code"] == "edit_conflict" and error["param"] == "version"
    assert f"version {seen}" in error["message"] and f"version {seen + 1}" in error["message"]
    assert _call("GET", url, key).json()["config"]["text"] == "mine"
    # Starting again from the version it is at saves; without a version, the last write wins.
    again = _call("PATCH", url, key, {"config": {"text": "theirs"}, "version": seen + 1})
    assert again.status_code == 200 and again.json()["config"]["text"] == "theirs"
    assert _call("PATCH", url, key, {"config": {"text": "any"}}).json()["version"] == seen + 3


def test_cells_crud_run_status_and_cancel(
    live_server, team, owner, viewer, outsider, other_team, project, cells
) -> None:
    base = f"{live_server.url}/api"
    _, key = api_key_create(team=team, created_by=owner, name="ci")
    _, read_only = api_key_create(team=team, created_by=owner, name="ro", read_only=True)
    _, viewer_key = api_key_create(team=team, created_by=viewer, name="v")
    _, theirs = api_key_create(team=other_team, created_by=outsider, name="theirs")

    listed = _call("GET", f"{base}/projects/{project.pk}/cells", read_only).json()["data"]
    assert [c["kind"] for c in listed] == ["markdown", "dataset", "finetune"]
    assert [c["position"] for c in listed] == [1, 2, 3]

    added = _call(
        "POST", f"{base}/projects/{project.pk}/cells", key,
        {"kind": "markdown", "title": "Notes", "config": {"text": "# Plan"}},
    )  # fmt: skip
    assert added.status_code == 201, added.text
    note = added.json()
    assert note["position"] == 4 and note["config"]["text"] == "# Plan"
    unknown = _call("POST", f"{base}/projects/{project.pk}/cells", key, {"kind": "nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "kind"
    bad_lr = _call(
        "PATCH", f"{base}/cells/{cells['finetune'].pk}", key, {"config": {"learning_rate": 9}}
    )
    assert bad_lr.status_code == 400 and bad_lr.json()["error"]["param"] == "learning_rate"

    edited = _call(
        "PATCH", f"{base}/cells/{note['id']}", key, {"title": "Plan", "config": {"text": "v2"}}
    )
    assert edited.json()["title"] == "Plan" and edited.json()["config"]["text"] == "v2"
    moved = _call("POST", f"{base}/cells/{note['id']}/move", key, {"direction": -1}).json()
    assert moved["position"] == 3
    in_use = _call("DELETE", f"{base}/cells/{cells['dataset'].pk}", key)
    assert in_use.status_code == 400 and "use this one" in in_use.json()["error"]["message"]
    assert _call("DELETE", f"{base}/cells/{note['id']}", key).status_code == 204
    assert _call("GET", f"{base}/cells/{note['id']}", key).status_code == 404

    assert _call("POST", f"{base}/cells/{cells['markdown'].pk}/runs", key).status_code == 400
    ft = cells["finetune"].pk
    runs = [
        _call("POST", f"{base}/cells/{ft}/runs", key, **{"Idempotency-Key": "run-1"})
        for _ in range(2)
    ]
    assert runs[0].status_code == 201 and runs[0].json()["id"] == runs[1].json()["id"]
    run = runs[0].json()
    assert (run["status"], run["version"], run["job_status"]) == ("queued", 1, "queued")
    assert _call("GET", f"{base}/runs/{run['id']}", read_only).json()["status"] == "queued"
    assert [r["id"] for r in _call("GET", f"{base}/cells/{ft}/runs", key).json()["data"]] == [
        run["id"]
    ]
    cancelled = _call("POST", f"{base}/runs/{run['id']}/cancel", key).json()
    assert cancelled["status"] == "cancelled" and cancelled["job_status"] == "cancelled"
    again = _call("POST", f"{base}/runs/{run['id']}/cancel", key)
    assert again.status_code == 400 and "already finished" in again.json()["error"]["message"]

    # Roles and teams: read-only keys and viewers cannot write; other teams see nothing.
    assert _call("POST", f"{base}/cells/{ft}/runs", read_only).status_code == 403
    assert _call("PATCH", f"{base}/cells/{ft}", viewer_key, {"title": "x"}).status_code == 403
    for path in (f"cells/{ft}", f"runs/{run['id']}", f"projects/{project.pk}/cells"):
        hidden = _call("GET", f"{base}/{path}", theirs)
        assert hidden.status_code == 404 and set(hidden.json()["error"]) == ERROR_KEYS
    assert _call("POST", f"{base}/cells/{ft}/runs", theirs).status_code == 404
    assert _call("GET", f"{base}/cells/{2**60}", key).status_code == 400


def test_unknown_urls_and_methods_are_openai_shaped(live_server, owner_key) -> None:
    base = f"{live_server.url}/api"
    for method, path, status in (
        ("GET", "/nope", 404),
        ("GET", "/projects/abc", 400),
        ("PUT", "/projects", 405),
        ("DELETE", "/teams", 405),
    ):
        response = _call(method, f"{base}{path}", owner_key)
        assert response.status_code == status, (method, path, response.status_code)
        assert set(response.json()["error"]) == ERROR_KEYS, (method, path)
        assert response.headers["x-should-retry"] == "false"


def test_recipe_export_and_import_round_trip(
    live_server, team, owner, outsider, other_team, project, cells
) -> None:
    base = f"{live_server.url}/api"
    _, key = api_key_create(team=team, created_by=owner, name="ci")
    _, read_only = api_key_create(team=team, created_by=owner, name="ro", read_only=True)
    _, theirs = api_key_create(team=other_team, created_by=outsider, name="theirs")

    recipe = _get(f"{base}/projects/{project.pk}/recipe", read_only).json()
    assert recipe["tunebook_recipe"] == 1 and recipe["name"] == project.name
    assert recipe["cells"][2]["config"]["dataset_cell"] == {"cell": 2}
    assert _get(f"{base}/projects/{project.pk}/recipe", theirs).status_code == 404

    made = _post(f"{base}/projects/import", key, {"recipe": recipe, "name": "Twin"})
    assert made.status_code == 201, made.text
    twin = Project.objects.get(pk=made.json()["id"])
    assert twin.name == "Twin" and twin.team_id == team.pk
    assert [c.kind for c in twin.cells.order_by("position")] == ["markdown", "dataset", "finetune"]
    tune = twin.cells.get(kind="finetune")
    assert tune.config["dataset_cell"] == twin.cells.get(kind="dataset").pk

    assert _post(f"{base}/projects/import", read_only, {"recipe": recipe}).status_code == 403
    # The other team has no dataset of that name: a 400 that says so, and nothing made.
    refused = _post(f"{base}/projects/import", theirs, {"recipe": recipe})
    assert refused.status_code == 400 and "no dataset named" in refused.json()["error"]["message"]
    assert not Project.objects.filter(team=other_team).exists()
    broken = _post(f"{base}/projects/import", key, {"recipe": {**recipe, "cells": "x"}})
    assert (
        broken.status_code == 400 and "cells: must be a list" in broken.json()["error"]["message"]
    )
