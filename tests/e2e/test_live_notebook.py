"""The notebook updates without a reload (issue 27), in a real browser on a real worker
and the tiny model: Run on a fine-tune cell shows it queued, then running with its
progress, then finished with its loss and checkpoints, all in the cell; Run on a
playground cell then shows both answers in the cell. The page is never reloaded.
Screenshots: test-artifacts/e2e/<test name>/NN-*.png.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.helpers import log_in
from tests.web.conftest import make_user
from tests.web.test_transfers_worker import notebook
from tests.web.worker_harness import Worker
from webapp.projects.models import Cell
from webapp.projects.services import cell_create
from webapp.teams.services import team_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Every status the cells' live parts show across htmx's swaps, and whether a progress bar
# appeared; `stayed` is lost if the page reloads.
RECORDER = """() => {
  window.stayed = true;
  window.seen = {};
  const note = () => document.querySelectorAll(".cell-live").forEach((part) => {
    const seen = (window.seen[part.id] ??= {statuses: [], progress: false});
    const status = part.querySelector(".latest-run h4 .status");
    const text = status ? status.textContent.trim() : "";
    if (text && seen.statuses.at(-1) !== text) seen.statuses.push(text);
    if (part.querySelector(".latest-run progress")) seen.progress = true;
  });
  note();
  new MutationObserver(note).observe(document.querySelector("main"), {subtree: true, childList: true});
}"""


def run_in_place(page: Page, cell: Cell) -> Locator:
    """Click the cell's Run button; its live part, swapped in by htmx, says it is queued."""
    box = page.locator(f"#cell-{cell.pk}")
    box.get_by_role("button", name="Run").click()
    expect(box.locator(".messages")).to_contain_text(f"{cell}: run v1 queued.")
    return box.locator(".latest-run")


def test_notebook_updates_without_a_reload(
    page: Page, worker: Worker, shot: Callable[[Any, str], Path]
) -> None:
    user = make_user("liv")
    nb = notebook(
        team_create(name="Live lab", owner=user), user, worker,
        max_steps=16, eval_every=4, save_every=8,
    )  # fmt: skip
    tuned = nb["finetune"]
    playground = cell_create(
        project=nb["project"],
        kind="playground",
        config={"model_cell": tuned.pk, "prompt": "What is 7 plus one?", "max_new_tokens": 8},
        created_by=user,
    )
    log_in(page, "liv")
    page.goto(f"/projects/{nb['project'].pk}/")
    page.evaluate(RECORDER)
    shot(page, "01-notebook")

    latest = run_in_place(page, tuned)
    shot(page, "02-finetune-queued")
    expect(latest.locator("h4 .status")).to_have_text("Succeeded", timeout=180_000)
    expect(latest.locator("table.checkpoints")).to_contain_text("16")
    expect(latest).to_contain_text("Train loss")
    expect(latest.locator("svg polyline").first).to_be_attached()  # the loss chart
    shot(page, "03-finetune-finished")
    seen = page.evaluate("window.seen")[f"cell-live-{tuned.pk}"]
    assert seen["statuses"][0] == "Queued" and seen["statuses"][-1] == "Succeeded", seen
    assert "Running" in seen["statuses"] and seen["progress"], seen

    answers = run_in_place(page, playground)
    expect(answers.locator("h4 .status")).to_have_text("Succeeded", timeout=120_000)
    expect(answers.locator("article.answer")).to_have_count(2)
    expect(answers.locator("article.answer h3").nth(1)).to_contain_text("Fine-tuned")
    for article in answers.locator("article.answer").all():
        expect(article.locator("small")).to_contain_text("tokens")
    shot(page, "04-playground-answers")
    assert page.evaluate("window.stayed") is True  # no reload happened on the way
