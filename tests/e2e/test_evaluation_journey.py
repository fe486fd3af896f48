"""Pairwise evaluation in the browser: base SmolLM2-135M vs its fine-tuned adapter, judged
by the local SmolLM2 on a real worker; then the comparison page, a reviewer's keyboard
vote, the diff, the filters and the exports. Kept small for CI: 2 prompts, short answers.

Screenshots: test-artifacts/e2e/<test name>/NN-*.png.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.helpers import cell_by_title, choose_option, log_in, run_and_watch
from tests.e2e.test_journey import add_cell, sports_slice
from tests.web.conftest import Upload, make_user
from tests.web.worker_harness import Worker, wait_for
from webapp.datasets.models import DatasetVersion, VersionStatus
from webapp.datasets.services import dataset_version_create
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.services import cell_create, cell_run_create, project_create
from webapp.teams.services import team_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

MODEL = "smollm2-135m-instruct"


def fine_tuned_notebook(tmp_path: Path, worker: Worker) -> dict[str, Any]:
    """Set up through the services (the fine-tune UI has its own journey test)."""
    user = make_user("rita")
    team = team_create(name="Eval lab", owner=user)
    version = dataset_version_create(
        team=team,
        name="sports",
        upload=Upload.make("sports.jsonl", sports_slice(tmp_path, 20).read_bytes()),
        created_by=user,
    )
    wait_for(
        lambda: DatasetVersion.objects.get(pk=version.pk).status == VersionStatus.VALID,
        timeout=60,
        what="validation",
        worker=worker,
    )
    project = project_create(team=team, name="Judge notebook", created_by=user)
    ds = cell_create(
        project=project, kind="dataset", config={"dataset": version.dataset_id}, created_by=user
    )
    ft = cell_create(
        project=project,
        kind="finetune",
        title="QLoRA run",
        config={
            "dataset_cell": ds.pk,
            "base_model": MODEL,
            "preset": "quick",
            "quantization": "none",
            "max_steps": 1,
            "batch_size": 2,
            "max_length": 96,
            "eval_every": 1,
            "save_every": 1,
            "keep_transferable": "False",
        },
        created_by=user,
    )
    run = cell_run_create(cell=ft, created_by=user)
    wait_for(
        lambda: CellRun.objects.get(pk=run.pk).status in (RunStatus.SUCCEEDED, RunStatus.FAILED),
        timeout=180,
        what="fine-tune",
        worker=worker,
    )
    assert CellRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED, worker.tail()
    return {"user": user, "project": project}


def test_pairwise_base_vs_adapter_in_the_browser(
    page: Page, worker: Worker, tmp_path: Path, shot: Callable[[Any, str], Path]
) -> None:
    nb = fine_tuned_notebook(tmp_path, worker)
    log_in(page, "rita")
    page.goto(f"/projects/{nb['project'].pk}/")

    def evaluation_form(form: Any) -> None:
        form.locator("select[name=source]").select_option("dataset_cell")
        choose_option(form, "dataset_cell", "Dataset")
        form.locator("select[name=base_model]").select_option(MODEL)
        choose_option(form, "adapter_cell", "QLoRA run")
        form.locator("select[name=judge_mode]").select_option("auto")
        form.locator("select[name=judge_model]").select_option(MODEL)
        form.locator("select[name=quantization]").select_option("none")
        for name, value in {"max_prompts": 2, "max_new_tokens": 12, "judge_max_tokens": 40}.items():
            form.locator(f"input[name={name}]").fill(str(value))

    add_cell(page, "Evaluation", "Judge it", evaluation_form)
    cell = cell_by_title(page, "Judge it")
    expect(cell.locator(".cell-live")).to_contain_text("Not run yet")
    shot(page, "01-evaluation-cell")

    live = run_and_watch(page, "Judge it")
    expect(live.locator("h2 .status")).to_have_text(re.compile("Running|Succeeded"), timeout=60_000)
    shot(page, "02-evaluation-running")
    expect(live.locator("h2 .status")).to_have_text("Succeeded", timeout=240_000)
    expect(live.locator(".eval-summary")).to_contain_text("Consistency under swap")
    shot(page, "03-evaluation-done")

    live.get_by_role("link", name="Open the comparison").click()
    expect(page.get_by_role("heading", name=re.compile("Judge it · comparison"))).to_be_visible()
    expect(page.locator("table.eval-pairs")).to_contain_text(f"{MODEL} (base)")
    prompts = page.locator("li.eval-prompt")
    expect(prompts).to_have_count(2)
    expect(prompts.first.locator("article.answer")).to_have_count(2)
    expect(prompts.first.locator(".orders details")).to_have_count(2)  # both orders
    shot(page, "04-comparison")

    # Reviewer keys: j focuses the first prompt, a votes A on its pair (htmx, no reload).
    page.keyboard.press("j")
    expect(prompts.first).to_have_class(re.compile("focused"))
    page.keyboard.press("a")
    expect(prompts.first.locator(".votes")).to_contain_text("rita=a")
    page.keyboard.press("j")
    page.keyboard.press("t")
    expect(prompts.nth(1).locator(".votes")).to_contain_text("rita=tie")
    # k goes back; n moves the highlight along the prompt's pairs (one pair here: it stays).
    expect(page.locator("#keys-help")).to_contain_text("next pair in the prompt")
    page.keyboard.press("k")
    expect(prompts.first).to_have_class(re.compile("focused"))
    expect(prompts.nth(1)).not_to_have_class(re.compile("focused"))
    page.keyboard.press("n")
    expect(prompts.first.locator(".verdict").first).to_have_class(re.compile("current"))
    prompts.first.get_by_role("button", name="diff").click()
    expect(prompts.first.locator(".diff")).to_be_visible()
    shot(page, "05-votes-and-diff")

    page.reload()
    trust = page.locator("section.eval-trust")
    expect(trust).to_contain_text("Consistency under swap")
    page.locator("input[name=q]").fill("zzzz-no-such-text")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("ol.eval-prompts")).to_contain_text("No prompt matches these filters.")
    shot(page, "06-filtered")

    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    assert "outcome" in Path(download.value.path()).read_text().splitlines()[0]
