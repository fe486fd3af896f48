"""Notebooks: ordered cells, per-kind config, references to earlier cells, run versions."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from tests.web.conftest import CHAT_JSONL, Upload, client_for, make_user
from webapp.datasets.services import dataset_version_create
from webapp.projects.cell_kinds import REGISTRY
from webapp.projects.models import Cell, CellRun, RunStatus
from webapp.projects.services import (
    cell_create,
    cell_delete,
    cell_move,
    cell_run_create,
    cell_update,
    project_create,
)
from webapp.teams.services import team_create

FT = {
    "base_model": "tiny-llama",
    "epochs": 1,
    "learning_rate": 0.001,
    "lora_r": 8,
    "max_length": 128,
}


@pytest.fixture
def foreign(db):
    """Another team's dataset and notebook cells."""
    stranger = make_user("stella")
    team = team_create(name="Elsewhere", owner=stranger)
    version = dataset_version_create(
        team=team, name="theirs", upload=Upload.make("t.jsonl", CHAT_JSONL), created_by=stranger
    )
    project = project_create(team=team, name="Theirs", created_by=stranger)
    ds_cell = cell_create(
        project=project, kind="dataset", config={"dataset": version.dataset_id}, created_by=stranger
    )
    return {"dataset": version.dataset, "dataset_cell": ds_cell}


def test_cells_are_ordered_and_markdown_renders_safely(project, owner, cells) -> None:
    cell_create(
        project=project,
        kind="markdown",
        config={"text": "**bold** <script>alert(1)</script>\n- item [x](javascript:alert(1))"},
        created_by=owner,
    )
    assert list(project.cells.values_list("position", flat=True)) == [1, 2, 3, 4]
    page = client_for(owner).get(reverse("project_detail", args=[project.pk])).content.decode()
    assert "<h2>Hi</h2>" in page and "<strong>bold</strong>" in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert 'href="javascript' not in page
    first, last = cells["markdown"].pk, cells["finetune"].pk
    assert page.index(f"cell-{first}") < page.index(f"cell-{last}")


def test_add_cell_view_for_each_kind(project, editor, cells, dataset_version) -> None:
    client = client_for(editor)
    url = reverse("cell_add", args=[project.pk])
    assert client.post(url, {"kind": "markdown", "text": "notes"}).status_code == 302
    data = {"kind": "finetune", "title": "Second", "dataset_cell": cells["dataset"].pk, **FT}
    assert client.post(url, data).status_code == 302
    data = {
        "kind": "playground",
        "model_cell": cells["finetune"].pk,
        "prompt": "Hi",
        "max_new_tokens": 5,
    }
    assert client.post(url, data).status_code == 302
    assert project.cells.count() == 6
    bad = client.post(url, {"kind": "finetune", "dataset_cell": cells["markdown"].pk, **FT})
    assert bad.status_code == 400 and project.cells.count() == 6
    assert client.post(url, {"kind": "nonsense"}).status_code == 400
    form = client.get(
        reverse("project_detail", args=[project.pk]) + "?add=finetune", HTTP_HX_REQUEST="true"
    )
    assert form.content.decode().lstrip().startswith("<form")


def test_cell_rejects_another_teams_dataset_and_cell(project, owner, cells, foreign) -> None:
    with pytest.raises(ValidationError):
        cell_create(
            project=project,
            kind="dataset",
            config={"dataset": foreign["dataset"].pk},
            created_by=owner,
        )
    with pytest.raises(ValidationError):
        cell_create(
            project=project,
            kind="finetune",
            config={"dataset_cell": foreign["dataset_cell"].pk, **FT},
            created_by=owner,
        )
    response = client_for(owner).post(
        reverse("cell_add", args=[project.pk]),
        {"kind": "dataset", "dataset": foreign["dataset"].pk},
    )
    assert response.status_code == 400
    assert not Cell.objects.filter(project=project, config__dataset=foreign["dataset"].pk).exists()


def test_references_must_point_to_earlier_cells(project, owner, cells) -> None:
    ds, ft = cells["dataset"], cells["finetune"]
    # A playground may use a fine-tune above it, not below.
    play = cell_create(
        project=project,
        kind="playground",
        config={"model_cell": ft.pk, "prompt": "x"},
        created_by=owner,
    )
    assert play.position > ft.position
    later_ds = cell_create(project=project, kind="dataset", config=ds.config, created_by=owner)
    with pytest.raises(ValidationError, match="earlier cell|valid choice"):
        cell_update(cell=ft, config={**ft.config, "dataset_cell": later_ds.pk})
    with pytest.raises(ValidationError):
        cell_update(cell=cells["markdown"], config={})  # markdown needs text
    with pytest.raises(ValidationError, match="stay below"):
        cell_move(cell=ft, direction=-1)
    with pytest.raises(ValidationError, match="use this one"):
        cell_delete(cell=ds)
    cell_move(cell=cells["markdown"], direction=1)
    ds.refresh_from_db()
    assert ds.position == 1


def test_each_run_is_a_new_version_and_keeps_old_outputs(
    cells, owner, django_capture_on_commit_callbacks
) -> None:
    ft = cells["finetune"]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = cell_run_create(cell=ft, created_by=owner)
    CellRun.objects.filter(pk=first.pk).update(status=RunStatus.SUCCEEDED, outputs={"loss": 1.5})
    second = cell_run_create(cell=ft, created_by=owner)
    assert (first.version, second.version) == (1, 2)
    assert first.job.kind == "cell.finetune" and first.inputs == ft.config
    first.refresh_from_db()
    assert first.outputs == {"loss": 1.5}
    assert len(callbacks) == 1
    with pytest.raises(ValidationError, match="do not run"):
        cell_run_create(cell=cells["markdown"], created_by=owner)
    page = client_for(owner).get(reverse("project_detail", args=[ft.project_id])).content.decode()
    assert "v1" in page and "v2" in page and "loss" in page


def test_registry_is_the_single_source_of_kinds() -> None:
    assert set(REGISTRY) >= {"markdown", "dataset", "finetune", "playground"}
    assert dict(Cell._meta.get_field("kind").choices) == {k: v.label for k, v in REGISTRY.items()}
