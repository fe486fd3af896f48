""" "Keep transferable" follows the fleet (issue 27): where one worker serves the training
queues, the Trans-LoRA discriminator trained after a fine-tune would hold it for long, so
a fine-tune that does not say is made with it off, and the form says why; where several
do, it stays on. The choice is resolved when the cell (or, for an older cell, the run) is
made and stored, so what the notebook shows is what runs; an explicit choice always wins.
Real WorkerHost records, as the workers announce them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from tests.web.conftest import client_for
from webapp.api.v1.services import fine_tuning_job_create
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.ops.workers import worker_host_announce, worker_host_stopped
from webapp.projects.finetune_config import keeps_transferable
from webapp.projects.models import Cell
from webapp.projects.services import cell_create, cell_run_create

# `make run`'s embedded workers: one for CPU work, one for models; and the serving process.
EMBEDDED = {"cpu@box": ["default"], "models@box": ["gpu", "background"], "serve@box": ["serve"]}
FLEETS: dict[str, tuple[dict[str, list[str]], set[str], bool]] = {
    # name: (alive workers and their queues, workers stopped, the default)
    "no worker alive: not known, on": ({}, set(), True),
    "the embedded pair: one model worker, off": (EMBEDDED, set(), False),
    "two GPU workers: on": ({"gpu@a": ["gpu"], "gpu@b": ["gpu"]}, set(), True),
    "two, one of them stopped: off": ({"gpu@a": ["gpu"], "gpu@b": ["gpu"]}, {"gpu@b"}, False),
    "one worker on two training queues, counted once: off": (
        {"gpu@a": ["gpu", "gpu-large"]},
        set(),
        False,
    ),
    "one worker on each training queue: on": (
        {"gpu@a": ["gpu"], "big@b": ["gpu-large"]},
        set(),
        True,
    ),
}


def announce(workers: dict[str, list[str]], stopped: set[str] = frozenset()) -> None:
    for name, queues in workers.items():
        facts = {"host": name.split("@")[1], "pid": 1, "device": "cpu", "queues": queues}
        worker_host_announce(name=name, facts=facts)
    for name in stopped:
        worker_host_stopped(name=name)


def finetune(cells: dict[str, Cell], owner: Any, **config: Any) -> Cell:
    base = {**cells["finetune"].config}
    base.pop("keep_transferable", None)
    return cell_create(
        project=cells["finetune"].project,
        kind="finetune",
        config={**base, **config},
        created_by=owner,
    )


@pytest.fixture
def training_queues(settings: Any) -> None:
    settings.TRAINING_QUEUES = ["gpu", "gpu-large"]


@pytest.mark.parametrize("fleet", FLEETS)
def test_the_default_follows_the_workers_serving_training(
    fleet: str, cells: dict[str, Cell], owner: Any, training_queues: None
) -> None:
    workers, stopped, default = FLEETS[fleet]
    announce(workers, stopped)
    cell = finetune(cells, owner)
    assert cell.config["keep_transferable"] is default  # stored, not left to a later read
    assert keeps_transferable(cell.config) is default
    for choice in (True, False):  # a choice made is always kept
        given = finetune(cells, owner, keep_transferable=str(choice))
        assert given.config["keep_transferable"] is choice


def _shown(page: str, add_url: str) -> tuple[str, str]:
    """The add-cell form's selected keep_transferable option and its help text (the
    notebook's existing cells have forms of their own above it)."""
    form = page[page.index(f'action="{add_url}"') :]
    select = re.search(r'<select name="keep_transferable".*?</select>', form, re.S)
    assert select, "no keep_transferable select on the page"
    selected = re.search(r'<option value="(\w+)"[^>]*selected', select.group(0))
    return (selected.group(1) if selected else ""), form[select.end() : select.end() + 1500]


@pytest.mark.parametrize(
    ("workers", "selected", "says_why"),
    [(EMBEDDED, "False", True), ({"gpu@a": ["gpu"], "gpu@b": ["gpu"]}, "True", False)],
)
def test_the_form_shows_the_default_and_says_why_on_one_worker(
    workers: dict[str, list[str]], selected: str, says_why: bool, cells: dict[str, Cell], owner: Any
) -> None:
    announce(workers)
    project = cells["finetune"].project_id
    url = reverse("project_detail", args=[project]) + "?add=finetune"
    page = client_for(owner).get(url).content.decode()
    choice, help_text = _shown(page, reverse("cell_add", args=[project]))
    assert choice == selected
    assert ("one worker runs every fine-tune" in help_text) is says_why
    assert ("Turn it on if you will retire this base model" in help_text) is says_why


def test_a_cell_keeps_the_default_it_was_made_with(cells: dict[str, Cell], owner: Any) -> None:
    """Resolved once: a second worker arriving later changes neither the cell nor its run;
    an older cell with no key gets it resolved when its run is made, into the run's inputs."""
    announce(EMBEDDED)
    cell = finetune(cells, owner)
    announce({"gpu@other": ["gpu"]})
    assert cell_run_create(cell=cell, created_by=owner).inputs["keep_transferable"] is False
    older = finetune(cells, owner)
    Cell.objects.filter(pk=older.pk).update(
        config={k: v for k, v in older.config.items() if k != "keep_transferable"}
    )
    older.refresh_from_db()
    assert cell_run_create(cell=older, created_by=owner).inputs["keep_transferable"] is True


@pytest.mark.parametrize(("extras", "kept"), [({}, False), ({"keep_transferable": True}, True)])
def test_the_v1_api_resolves_a_missing_key_the_same_way(
    extras: dict[str, Any], kept: bool, team: Any, owner: Any, dataset_version: DatasetVersion
) -> None:
    announce(EMBEDDED)
    DatasetVersion.objects.filter(pk=dataset_version.pk).update(
        status=VersionStatus.VALID, n_examples=20, report={"ok": True, "format": "chat"}
    )
    dataset_version.refresh_from_db()
    job = fine_tuning_job_create(
        team=team,
        created_by=owner,
        model="smollm2-135m-instruct",
        training_file=dataset_version,
        suffix="",
        seed=None,
        metadata={},
        hyperparameters={},
        extras=extras,
    )
    assert job.cell_run.cell.config["keep_transferable"] is kept
    assert job.cell_run.inputs["keep_transferable"] is kept
