"""A cell lists only the settings it uses, and a finished run never says it waits (issue 27).

Seen in the re-walk of the first hour: a playground cell on a fine-tuned model listed
"Base model: SmolLM2" while its answers came from the fine-tune's base (tiny-llama); an
evaluation with no judge listed a local judge model; a playground run that failed before
it answered showed "Waiting for a worker…" under its error.
"""

from __future__ import annotations

from django.urls import reverse

from tests.web.conftest import client_for
from tests.web.test_readable_pages import settings_of
from webapp.projects.models import Cell, CellRun, RunStatus
from webapp.projects.services import cell_create

NO_RUN_YET = "The fine-tune cell has no finished run yet; run it first."


def notebook_page(cell: Cell, owner) -> str:
    url = reverse("project_detail", args=[cell.project_id])
    return client_for(owner).get(url).content.decode()


def cell_part(body: str, cell: Cell) -> str:
    return body.split(f'id="cell-{cell.pk}"', 1)[1].split('<li class="cell', 1)[0]


def test_a_playground_on_a_fine_tune_does_not_list_the_base_model_it_ignores(
    cells: dict[str, Cell], owner
) -> None:
    project, ft = cells["finetune"].project, cells["finetune"]
    config = {"prompt": "Hi", "max_new_tokens": 8, "base_model": "smollm2-135m-instruct"}
    on_tune = cell_create(
        project=project, kind="playground", config={**config, "model_cell": ft.pk}, created_by=owner
    )
    base_only = cell_create(project=project, kind="playground", config=config, created_by=owner)
    body = notebook_page(ft, owner)
    assert "Base model" not in settings_of(body, on_tune)
    assert settings_of(body, on_tune)["Fine-tuned model cell"].startswith(f"cell {ft.position}")
    assert "SmolLM2" in settings_of(body, base_only)["Base model"]


def test_an_evaluation_without_a_judge_lists_no_judge_settings(
    cells: dict[str, Cell], owner
) -> None:
    config = {
        "source": "dataset_cell",
        "dataset_cell": cells["dataset"].pk,
        "bigbench_task": "sports_understanding",  # left over from an earlier choice
        "base_model": "tiny-llama",
        "adapter_cell": cells["finetune"].pk,
        "judge_model": "gemma-3-270m",
        "judge_max_tokens": 256,
        "max_prompts": 5,
        "max_new_tokens": 8,
    }
    project = cells["finetune"].project
    exact = cell_create(
        project=project,
        kind="evaluation",
        config={**config, "judge_mode": "none"},
        created_by=owner,
    )
    judged = cell_create(
        project=project,
        kind="evaluation",
        config={**config, "judge_mode": "single"},
        created_by=owner,
    )
    body = notebook_page(exact, owner)
    shown = settings_of(body, exact)
    assert shown["Judge mode"].startswith("No judge")
    for label in ("Local judge model", "Judge&#x27;s rationale length", "BIG-bench task"):
        assert label not in shown, shown
    assert "Dataset cell" in shown and "Max prompts" in shown
    judged_shown = settings_of(body, judged)
    assert "Local judge model" in judged_shown and "Judge&#x27;s rationale length" in judged_shown
    assert "Dataset cell" in judged_shown
    bigbench = cell_create(
        project=project,
        kind="evaluation",
        config={**config, "source": "bigbench", "judge_mode": "none"},
        created_by=owner,
    )
    bigbench_shown = settings_of(notebook_page(bigbench, owner), bigbench)
    assert bigbench_shown["BIG-bench task"] == "sports_understanding"
    assert "Dataset cell" not in bigbench_shown


def test_a_failed_playground_run_does_not_say_it_waits_for_a_worker(
    cells: dict[str, Cell], owner
) -> None:
    project, ft = cells["finetune"].project, cells["finetune"]
    config = {"prompt": "Hi", "max_new_tokens": 8, "model_cell": ft.pk}
    failed = cell_create(project=project, kind="playground", config=config, created_by=owner)
    CellRun.objects.create(
        cell=failed, version=1, status=RunStatus.FAILED, outputs={"error": NO_RUN_YET}
    )
    queued = cell_create(project=project, kind="playground", config=config, created_by=owner)
    CellRun.objects.create(cell=queued, version=1, status=RunStatus.QUEUED)
    body = notebook_page(ft, owner)
    assert NO_RUN_YET in cell_part(body, failed)
    assert "Waiting for a worker" not in cell_part(body, failed)
    assert "Waiting for a worker" in cell_part(body, queued)
