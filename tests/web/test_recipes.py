"""Notebook recipes: export as JSON/YAML, re-create from one, with clear errors."""

from __future__ import annotations

import json
import tracemalloc

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.urls import reverse
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.web.conftest import CHAT_JSONL, Upload, client_for, make_user
from webapp.datasets.services import dataset_version_create
from webapp.projects.models import Cell, Project
from webapp.projects.recipes import recipe_check, recipe_parse
from webapp.projects.services import cell_create
from webapp.teams.services import team_create


@pytest.fixture
def full_notebook(project, cells, owner) -> Project:
    cell_create(
        project=project,
        kind="playground",
        config={"model_cell": cells["finetune"].pk, "prompt": "Hi?", "max_new_tokens": 8},
        title="Ask",
        created_by=owner,
    )
    return project


def _export(user, project: Project, fmt: str):
    return client_for(user).get(reverse("recipe_export", args=[project.pk, fmt]))


def _import(user, team, **data):
    return client_for(user).post(reverse("recipe_import", args=[team.pk]), data)


def _shape(project: Project) -> list[tuple]:
    """Kinds, titles and configs with references as positions: what a recipe must keep."""
    cells = list(project.cells.order_by("position"))
    place = {c.pk: c.position for c in cells}
    out = []
    for c in cells:
        config = dict(c.config)
        for key in ("dataset_cell", "model_cell"):
            if config.get(key) is not None:
                config[key] = ("cell", place[config[key]])
        out.append((c.kind, c.title, config))
    return out


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_export_then_import_recreates_the_notebook(fmt, full_notebook, team, viewer, editor):
    response = _export(viewer, full_notebook, fmt)  # reading is enough to export
    assert response.status_code == 200
    assert f'.recipe.{fmt}"' in response["Content-Disposition"]
    text = response.content.decode()
    recipe = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    assert [c["kind"] for c in recipe["cells"]] == ["markdown", "dataset", "finetune", "playground"]
    assert recipe["cells"][1]["config"]["dataset"] == {"dataset": "greetings"}
    assert recipe["cells"][2]["config"]["dataset_cell"] == {"cell": 2}
    assert recipe["cells"][3]["config"]["model_cell"] == {"cell": 3}

    response = _import(editor, team, text=text, name="Copy")
    assert response.status_code == 302, response.content.decode()
    copy = Project.objects.get(name="Copy", team=team)
    assert response["Location"] == reverse("project_detail", args=[copy.pk])
    assert _shape(copy) == _shape(full_notebook)
    # References point at the copy's own cells, never back into the original.
    tune = copy.cells.get(kind="finetune")
    assert Cell.objects.get(pk=tune.config["dataset_cell"]).project_id == copy.pk


def test_import_into_another_team_matches_datasets_by_name(full_notebook, team, owner):
    text = _export(owner, full_notebook, "yaml").content.decode()
    stranger = make_user("stella")
    lab = team_create(name="Other lab", owner=stranger)

    response = _import(stranger, lab, text=text)
    assert response.status_code == 400
    page = response.content.decode()
    assert "no dataset named" in page and "greetings" in page
    assert not Project.objects.filter(team=lab).exists()  # all or nothing

    theirs = dataset_version_create(
        team=lab, name="greetings", upload=Upload.make("c.jsonl", CHAT_JSONL), created_by=stranger
    )
    upload = Upload.make("nb.recipe.yaml", text.encode())
    assert _import(stranger, lab, file=upload).status_code == 302
    copy = Project.objects.get(team=lab)
    assert copy.cells.get(kind="dataset").config["dataset"] == theirs.dataset_id


def test_recipe_access_follows_the_team(full_notebook, team, viewer, outsider):
    assert _export(outsider, full_notebook, "json").status_code == 404
    assert _export(viewer, full_notebook, "xml").status_code == 404
    assert _import(outsider, team, text="{}").status_code == 404
    assert _import(viewer, team, text="{}").status_code == 403
    assert client_for(None).get(reverse("recipe_import", args=[team.pk])).status_code == 302


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "A recipe is a mapping"),
        ("tunebook_recipe: 2\nname: x\ncells: []", "tunebook_recipe: must be 1"),
        ("tunebook_recipe: 1\ncells: []", "name: give the notebook a name"),
        ("tunebook_recipe: 1\nname: x\ncells: {}", "cells: must be a list"),
        ("tunebook_recipe: 1\nname: x\ncells: [{kind: nope}]", "cells[1].kind: unknown cell kind"),
        (
            "tunebook_recipe: 1\nname: x\ncells: [{kind: finetune, config: {dataset_cell: {cell: 1}}}]",
            "cells[1].config.dataset_cell: must be {cell: k}",
        ),
        (
            "tunebook_recipe: 1\nname: x\ncells: [{kind: dataset, config: {dataset: 7}}]",
            "cells[1].config.dataset: must be {dataset:",
        ),
        ('{"tunebook_recipe": 1,\n "name": }', "line 2, column 10: not valid JSON"),
        ("name: [unclosed\ncells: 1", "not valid JSON or YAML"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_recipes_say_what_and_where(text, message) -> None:
    with pytest.raises(ValidationError) as caught:
        recipe_parse(text)
    assert message in " ".join(caught.value.messages)


def test_a_cell_the_form_rejects_names_the_cell(team, editor) -> None:
    text = (
        "tunebook_recipe: 1\nname: x\ncells:\n"
        "  - {kind: markdown, config: {text: hi}}\n"
        "  - {kind: playground, config: {prompt: '', max_new_tokens: 99999}}\n"
    )
    response = _import(editor, team, text=text)
    assert response.status_code == 400
    page = response.content.decode()
    assert "cells[2] (Playground)" in page and "max_new_tokens" in page
    assert not Project.objects.filter(name="x").exists()


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(data=JSONISH, kind=st.sampled_from(["finetune", "dataset", "playground", "markdown"]))
def test_the_checker_never_crashes_on_arbitrary_data(data, kind) -> None:
    for candidate in (
        data,
        {"tunebook_recipe": 1, "name": "n", "cells": data},
        {"tunebook_recipe": 1, "name": "n", "cells": [{"kind": kind, "config": data}]},
    ):
        try:
            checked = recipe_check(candidate)
        except ValidationError as exc:
            assert exc.messages and all(exc.messages)  # refused, and it says why
        else:
            assert isinstance(checked["cells"], list)


def _laughs(levels: int) -> str:
    """A billion-laughs recipe: each level is ten aliases of the one before."""
    lines = ["tunebook_recipe: 1", "name: lol", "cells:", "- kind: markdown", "  config:"]
    lines.append('    l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]')
    for n in range(1, levels + 1):
        lines.append(f"    l{n}: &l{n} [" + ",".join([f"*l{n - 1}"] * 10) + "]")
    lines.append(f"    text: *l{levels}")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_before_anything_is_built(team, editor) -> None:
    text = _laughs(9)  # 10**10 strings once expanded
    assert len(text) < 1000
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError) as caught:
            recipe_parse(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000
    assert caught.value.messages == [
        "line 6, column 9: anchors and aliases (& and *) are not allowed; write the value out."
    ]
    response = _import(editor, team, text=text)
    assert response.status_code == 400 and "anchors and aliases" in response.content.decode()
    assert not Project.objects.filter(name="lol").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: " + "[" * 5000 + "]" * 5000, "line 1, column 35: nested deeper than 32 levels"),
        ("[" * 200_000 + "]" * 200_000, "nested deeper than 32 levels"),
        ('{"a": ' + "[" * 100 + "]" * 100 + "}", "a[1][1][1]"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than 32 levels"),
        ("name: x\nlist: [" + "1," * 60_000 + "]", "a recipe holds at most 50000 values"),
        ("name: '" + "x" * 200_000 + "'", "line 1, column 7: a text is at most 100000"),
        ("tunebook_recipe: 1\nname: x\ncells: []\nwhen: 2024-01-01", None),
        ("name: !!binary aGk=", "name: a bytes is not JSON data"),
        ("name: .nan", "name: numbers must be finite"),
        ("1: x", "1: keys must be text"),
        ("a: " + "9" * 5000, "a value YAML cannot read"),
        ('{"a": ' + "9" * 5000 + "}", "a value JSON cannot read"),
        ('{"a": "\\ud800"}', "a: text with an unpaired surrogate"),
        ("a: &x 1\nb: 2", "line 1, column 4: anchors and aliases"),
        ("a: 1\n---\nb: 2", "not valid JSON or YAML"),
    ],
)
def test_recipe_limits_say_what_and_where(text: str, message: str | None) -> None:
    if message is None:  # a date stays text, so it is JSON data
        assert recipe_parse(text)["when"] == "2024-01-01"
        return
    with pytest.raises(ValidationError) as caught:
        recipe_parse(text)
    assert message in " ".join(caught.value.messages)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="&*[]{}:,-!|>'\"\n #01.ab\\u", max_size=80)
    | st.text(max_size=80)
    | st.binary(max_size=80)
)
def test_recipe_parse_refuses_garbage_with_a_message_and_never_crashes(text: str | bytes) -> None:
    try:
        recipe = recipe_parse(text)
    except ValidationError as exc:
        assert exc.messages and all(exc.messages)
    else:
        assert isinstance(recipe["cells"], list)
