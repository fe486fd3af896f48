"""The fine-tune cell's dataset dropdowns group the notebook's dataset cells by the training
methods their validated data suits (preference pairs: DPO or SimPO; answers: supervised
training), each named with its dataset and version."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

from tests.web.conftest import Upload, client_for
from tests.web.preference_data import CHAT, PREFERENCE
from tests.web.worker_harness import broker
from webapp.datasets.models import DatasetVersion
from webapp.datasets.services import dataset_version_create
from webapp.projects.models import Project
from webapp.projects.services import cell_create

GROUPS = {
    "Preference pairs: for DPO or SimPO": ["“pairs” v1"],
    "Answers (chat, prompt-completion, ...): for Supervised training": ["“answers” v1"],
    "Not validated yet: checked when the run starts": ["“fresh” v1"],
}


@pytest.fixture(autouse=True)
def _private_broker(tmp_path: Path):
    with broker(f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"):
        yield


def uploaded(project: Project, owner, name: str, data: bytes, *, validate: bool) -> None:
    from workers import tasks

    version = dataset_version_create(
        team=project.team, name=name, upload=Upload.make(f"{name}.jsonl", data), created_by=owner
    )
    if validate:  # the worker's task, in process
        tasks.validate_dataset_version.apply(args=[version.pk])
    config = {"dataset": version.dataset_id}
    cell_create(project=project, kind="dataset", config=config, created_by=owner, title=name)


def groups_of(page: str, field: str) -> dict[str, list[str]]:
    """{optgroup label: the datasets its options name} of the select called `field`."""
    select = re.search(rf'<select name="{field}"[^>]*>(.*?)</select>', page, re.S)
    assert select, f"no {field} select"
    found = {}
    for label, body in re.findall(r'<optgroup label="([^"]+)">(.*?)</optgroup>', select[1], re.S):
        found[label] = re.findall(r"(“[^”]+” v\d+)</option>", body)
    return found


def test_dataset_dropdowns_group_cells_by_the_methods_their_data_suits(
    project, owner, editor
) -> None:
    uploaded(project, owner, "pairs", PREFERENCE, validate=True)
    uploaded(project, owner, "answers", CHAT, validate=True)
    uploaded(project, owner, "fresh", CHAT, validate=False)
    assert DatasetVersion.objects.get(dataset__name="pairs").report["format"] == "preference"

    page = client_for(editor).get(reverse("project_detail", args=[project.pk]) + "?add=finetune")
    text = page.content.decode().replace("&quot;", '"').replace("&#x27;", "'")
    assert groups_of(text, "dataset_cell") == GROUPS
    assert groups_of(text, "val_dataset_cell") == GROUPS
    assert "cell 1 · pairs · “pairs” v1" in text

    # The groups are only labels: any of the cells is still a valid choice.
    pairs_cell = project.cells.get(title="pairs")
    form = {"kind": "finetune", "base_model": "tiny-llama", "training_method": "dpo"}
    added = client_for(editor).post(
        reverse("cell_add", args=[project.pk]), {**form, "dataset_cell": pairs_cell.pk}
    )
    assert added.status_code == 302
    assert project.cells.get(kind="finetune").config["dataset_cell"] == pairs_cell.pk
