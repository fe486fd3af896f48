"""Every view, every persona: outsiders get 404, viewers cannot write, anonymous must log in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import reverse

from tests.web.conftest import CHAT_JSONL, Upload, client_for
from tests.web.export_fixtures import finish_finetune, finished_export
from webapp.exports.services import export_create
from webapp.teams.services import invitation_create

PERSONAS = ("owner", "editor", "viewer", "outsider")
READ = {"owner": 200, "editor": 200, "viewer": 200, "outsider": 404}
WRITE = {"owner": 302, "editor": 302, "viewer": 403, "outsider": 404}
EDIT_PAGE = {"owner": 200, "editor": 200, "viewer": 403, "outsider": 404}
OWNER_ONLY = {"owner": 302, "editor": 403, "viewer": 403, "outsider": 404}


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    url: Callable[[dict[str, Any]], str]
    expected: dict[str, int]
    data: Callable[[dict[str, Any]], dict[str, Any]] = lambda objs: {}


CASES = [
    Case("team_detail", "get", lambda o: reverse("team_detail", args=[o["team"].pk]), READ),
    Case(
        "team_invite",
        "post",
        lambda o: reverse("team_invite", args=[o["team"].pk]),
        OWNER_ONLY,
        lambda o: {"invitee": "newbie", "role": "editor"},
    ),
    Case(
        "project_new",
        "post",
        lambda o: reverse("project_new", args=[o["team"].pk]),
        WRITE,
        lambda o: {"name": "Another"},
    ),
    Case(
        "project_detail", "get", lambda o: reverse("project_detail", args=[o["project"].pk]), READ
    ),
    Case(
        "cell_add",
        "post",
        lambda o: reverse("cell_add", args=[o["project"].pk]),
        WRITE,
        lambda o: {"kind": "markdown", "text": "more"},
    ),
    Case(
        "cell_edit",
        "post",
        lambda o: reverse("cell_edit", args=[o["cells"]["markdown"].pk]),
        WRITE,
        lambda o: {"text": "changed"},
    ),
    Case(
        "cell_delete",
        "post",
        lambda o: reverse("cell_delete", args=[o["cells"]["markdown"].pk]),
        WRITE,
    ),
    Case(
        "cell_move",
        "post",
        lambda o: reverse("cell_move", args=[o["cells"]["markdown"].pk]),
        WRITE,
        lambda o: {"direction": "down"},
    ),
    Case(
        "cell_run", "post", lambda o: reverse("cell_run", args=[o["cells"]["finetune"].pk]), WRITE
    ),
    Case(
        "cell_live", "get", lambda o: reverse("cell_live", args=[o["cells"]["finetune"].pk]), READ
    ),
    Case("dataset_list", "get", lambda o: reverse("dataset_list", args=[o["team"].pk]), READ),
    Case(
        "dataset_upload_get",
        "get",
        lambda o: reverse("dataset_upload", args=[o["team"].pk]),
        EDIT_PAGE,
    ),
    Case(
        "dataset_upload_post",
        "post",
        lambda o: reverse("dataset_upload", args=[o["team"].pk]),
        WRITE,
        lambda o: {"name": "greetings", "file": Upload.make("more.jsonl", CHAT_JSONL)},
    ),
    Case(
        "dataset_detail",
        "get",
        lambda o: reverse("dataset_detail", args=[o["version"].dataset_id]),
        READ,
    ),
    Case(
        "dataset_version_detail",
        "get",
        lambda o: reverse("dataset_version_detail", args=[o["version"].pk]),
        READ,
    ),
    Case(
        "dataset_version_download",
        "get",
        lambda o: reverse("dataset_version_download", args=[o["version"].pk]),
        READ,
    ),
    Case(
        "membership_remove",
        "post",
        lambda o: reverse("membership_remove", args=[o["membership"].pk]),
        OWNER_ONLY,
    ),
    Case(
        "membership_role",
        "post",
        lambda o: reverse("membership_role", args=[o["membership"].pk]),
        OWNER_ONLY,
        lambda o: {"role": "editor"},
    ),
    Case(
        "invitation_revoke",
        "post",
        lambda o: reverse("invitation_revoke", args=[o["invitation"].pk]),
        OWNER_ONLY,
    ),
    Case("job_detail", "get", lambda o: reverse("job_detail", args=[o["job"].pk]), READ),
    Case("job_cancel", "post", lambda o: reverse("job_cancel", args=[o["job"].pk]), WRITE),
    Case("export_panel", "get", lambda o: reverse("export_panel", args=[o["done_run"].pk]), READ),
    Case(
        "export_start",
        "post",
        lambda o: reverse("export_start", args=[o["done_run"].pk]),
        WRITE,
        lambda o: {"export": "merged/f16"},
    ),
    Case(
        "export_cancel",
        "post",
        lambda o: reverse("export_cancel", args=[o["active_export"].pk]),
        WRITE,
    ),
    Case(
        "export_file",
        "get",
        lambda o: reverse("export_file", args=[o["export"].pk, "adapter_config.json"]),
        READ,
    ),
    Case("export_zip", "get", lambda o: reverse("export_zip", args=[o["export"].pk]), READ),
]


@pytest.fixture
def objects(team, project, cells, dataset_version, cell_run, owner, viewer) -> dict[str, Any]:
    done_run = finish_finetune(cell_run)
    return {
        "done_run": done_run,
        "export": finished_export(done_run, owner),
        "active_export": export_create(run=done_run, format="gguf", by=owner),
        "team": team,
        "membership": team.memberships.get(user=viewer),
        "invitation": invitation_create(team=team, invited_by=owner, invitee="zoe"),
        "project": project,
        "cells": cells,
        "version": dataset_version,
        "job": dataset_version.validation_job,
    }


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_view_access(case: Case, persona: str, personas, objects) -> None:
    client = client_for(personas[persona])
    response = getattr(client, case.method)(case.url(objects), case.data(objects))
    assert response.status_code == case.expected[persona], response.content[:300]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_anonymous_is_sent_to_login(case: Case, objects) -> None:
    response = getattr(client_for(None), case.method)(case.url(objects), case.data(objects))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_outsider_sees_none_of_the_team_on_dashboard(personas, objects) -> None:
    page = client_for(personas["outsider"]).get(reverse("dashboard")).content.decode()
    assert "Lab" not in page and "First notebook" not in page
    page = client_for(personas["viewer"]).get(reverse("dashboard")).content.decode()
    assert "Lab" in page and "First notebook" in page


def test_viewer_gets_read_only_pages(personas, objects) -> None:
    client = client_for(personas["viewer"])
    notebook = client.get(reverse("project_detail", args=[objects["project"].pk])).content.decode()
    assert "Add a cell" not in notebook and ">Run<" not in notebook
    team_page = client.get(reverse("team_detail", args=[objects["team"].pk])).content.decode()
    assert "Upload a dataset" not in team_page and "New notebook" not in team_page
    editor_page = client_for(personas["editor"]).get(
        reverse("project_detail", args=[objects["project"].pk])
    )
    assert "Add a cell" in editor_page.content.decode()


@pytest.mark.parametrize(
    "url_name",
    [
        "team_invite",
        "project_new",
        "cell_add",
        "cell_run",
        "job_cancel",
        "dataset_upload",
        "membership_remove",
        "invitation_revoke",
    ],
)
def test_forged_post_without_csrf_is_rejected(url_name: str, personas, objects) -> None:
    target = {
        "team_invite": objects["team"].pk,
        "project_new": objects["team"].pk,
        "dataset_upload": objects["team"].pk,
        "cell_add": objects["project"].pk,
        "cell_run": objects["cells"]["finetune"].pk,
        "job_cancel": objects["job"].pk,
        "membership_remove": objects["membership"].pk,
        "invitation_revoke": objects["invitation"].pk,
    }[url_name]
    client = client_for(personas["owner"], csrf=True)
    data = {"name": "x", "invitee": "y", "kind": "markdown", "text": "t"}
    if url_name == "dataset_upload":
        data["file"] = Upload.make("f.jsonl", CHAT_JSONL)
    response = client.post(reverse(url_name, args=[target]), data)
    assert response.status_code == 403
