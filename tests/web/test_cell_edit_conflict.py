"""Concurrent cell edits (issue 20 item 9): an edit from an older version is refused, says
what differs, and keeps the user's text; nothing is overwritten silently."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.web.conftest import client_for
from webapp.projects.models import Cell
from webapp.projects.services import CellEditConflict, cell_create, cell_update


@pytest.fixture
def playground(project, owner) -> Cell:
    config = {"base_model": "tiny-llama", "prompt": "Hello?", "max_new_tokens": 16}
    return cell_create(project=project, kind="playground", config=config, created_by=owner)


def _edit(client, cell: Cell, version: str, prompt: str):
    fields = {"base_model": "tiny-llama", "max_new_tokens": "16", "temperature": "0"}
    data = {**fields, "title": cell.title, "version": version, "prompt": prompt}
    return client.post(reverse("cell_edit", args=[cell.pk]), data)


def test_two_edits_from_the_same_version(playground, owner, editor) -> None:
    page = client_for(owner).get(reverse("project_detail", args=[playground.project_id]))
    started = re.search(r'name="version" value="(\d+)"', page.content.decode()).group(1)
    assert started == "1"
    first = _edit(client_for(owner), playground, started, "Olga's prompt")
    assert first.status_code == 302
    second = _edit(client_for(editor), playground, started, "Eddie's prompt")
    html = second.content.decode()
    assert second.status_code == 409
    assert "someone else saved this cell" in html and "differ in: Prompt" in html
    assert "Eddie&#x27;s prompt" in html  # the refused text is kept in the form
    assert 'name="version" value="2"' in html  # saving again now means: over version 2
    playground.refresh_from_db()
    assert playground.config["prompt"] == "Olga's prompt" and playground.version == 2
    again = _edit(client_for(editor), playground, "2", "Eddie's prompt")
    assert again.status_code == 302
    playground.refresh_from_db()
    assert playground.config["prompt"] == "Eddie's prompt" and playground.version == 3


def test_the_service_refuses_a_stale_version(playground) -> None:
    config = {**playground.config, "prompt": "new"}
    cell_update(cell=playground, config=config, seen_version=1)
    stale = Cell.objects.get(pk=playground.pk)
    stale.version = 1
    with pytest.raises(CellEditConflict) as conflict:
        cell_update(cell=stale, config={**config, "prompt": "old"}, seen_version=1)
    assert conflict.value.current.version == 2
    assert Cell.objects.get(pk=playground.pk).config["prompt"] == "new"
