"""`manage.py demo_setup`: the demo login and a ready notebook, created once.

The notebook's cells are made through cell_create, which validates each config with its
kind's form; `make bench-demo` runs them with a real worker and the real model."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from webapp.datasets.models import DatasetVersion
from webapp.home.management.commands import demo_setup
from webapp.projects.finetune_config import effective_hparams, keeps_transferable
from webapp.projects.models import Project


@pytest.mark.django_db(transaction=True)
def test_demo_setup_is_ready_and_idempotent(client) -> None:
    out = StringIO()
    call_command("demo_setup", stdout=out)
    call_command("demo_setup", stdout=out)
    assert out.getvalue().count("log in as demo / tunebook-demo") == 2
    assert get_user_model().objects.filter(username="demo").count() == 1
    project = Project.objects.get(name="Demo: 2-digit addition")
    cells = list(project.cells.order_by("position"))
    assert [c.kind for c in cells] == [
        "markdown",
        "dataset",
        "finetune",
        "evaluation",
        "playground",
    ]
    _, data, tune, evaluation, playground = cells
    version = DatasetVersion.objects.get(dataset__team=project.team)
    assert version.size > 10_000 and data.config["dataset"] == version.dataset_id

    # The fine-tune: the settings the bench measured, and no background discriminator job.
    hp = effective_hparams(tune.config)
    assert tune.config["dataset_cell"] == data.pk
    assert (hp["epochs"], hp["learning_rate"], hp["lora_r"]) == (1, 1e-3, 8)
    assert (hp["batch_size"], hp["max_length"], hp["max_steps"]) == (4, 128, None)
    assert not keeps_transferable(tune.config)
    # The evaluation's dataset_cell source reads the split at 10%, seed 0: the same one.
    assert (hp["val_fraction"], hp["seed"]) == (0.1, 0)

    # The evaluation: base against the fine-tuned cell on the fine-tune's held-out split,
    # exact match only (no judge model).
    ec = evaluation.config
    assert (ec["source"], ec["dataset_cell"], ec["adapter_cell"]) == (
        "dataset_cell",
        data.pk,
        tune.pk,
    )
    assert ec["base_model"] == tune.config["base_model"] == "smollm2-135m-instruct"
    assert ec["judge_mode"] == "none" and not ec["judge"]
    assert ec["max_prompts"] == demo_setup.EVAL_PROMPTS
    assert playground.config["model_cell"] == tune.pk
    assert "plus" in playground.config["prompt"]

    assert client.login(username="demo", password="tunebook-demo")
    page = client.get(f"/projects/{project.pk}/")
    body = page.content.decode()
    assert page.status_code == 200 and "2-digit addition" in body and "exact match" in body


def test_demo_data_holds_out_enough_unseen_questions() -> None:
    """The evaluation's prompts: the fine-tune's 10% validation split, none of them trained
    on, and the playground's question in no example at all."""
    lines = demo_setup.DEMO_DATA.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    questions = [r["messages"][0]["content"] for r in rows]
    assert len(rows) == 400 and len(set(questions)) == len(questions)
    assert all(r["messages"][1]["content"].isdigit() for r in rows)
    held_out = round(len(rows) * demo_setup.FINETUNE["val_fraction"])
    assert held_out >= demo_setup.EVAL_PROMPTS
    assert demo_setup.PLAYGROUND_PROMPT not in questions
