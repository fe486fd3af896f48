"""Trans-LoRA in the browser on the tiny models: a fine-tune kept transferable (seeds and
discriminator; tests/web/test_transfers_worker.py deletes the data first), then a Transfer
cell added through the notebook form and run on a real worker;
the live phases, the inline report (bars with intervals, accepted samples) and the
download. Screenshots: test-artifacts/e2e/<test name>/NN-*.png.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.helpers import cell_by_title, choose_option, log_in, run_and_watch
from tests.e2e.test_journey import add_cell
from tests.web.conftest import make_user
from tests.web.test_finetune_worker import finished
from tests.web.test_transfers_worker import TINY_TRANSFER, notebook, run_cell, transferable_status
from tests.web.worker_harness import Worker, wait_for
from webapp.projects.models import CellRun, RunStatus
from webapp.teams.services import team_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def transferable_notebook(worker: Worker) -> dict[str, Any]:
    """Through the services (the fine-tune UI has its own journey test)."""
    user = make_user("tess")
    team = team_create(name="Transfer lab", owner=user)
    cells = notebook(
        team, user, worker, max_steps=4, eval_every=2, save_every=2, keep_transferable=True
    )
    source = run_cell(cells["finetune"], user)
    wait_for(finished(source), timeout=120, what="training", worker=worker)
    wait_for(
        lambda: transferable_status(source) == "succeeded",
        timeout=420,
        what="the discriminator",
        worker=worker,
    )
    return {**cells, "user": user}


def test_transfer_cell_in_the_browser(
    page: Page, worker: Worker, tmp_path: Path, shot: Callable[[Any, str], Path]
) -> None:
    nb = transferable_notebook(worker)
    log_in(page, "tess")
    page.goto(f"/projects/{nb['project'].pk}/")

    def transfer_form(form: Any) -> None:
        choose_option(form, "source_cell", str(nb["finetune"]))
        form.locator("select[name=base_model]").select_option("tiny-llama-wide")
        form.locator("select[name=quantization]").select_option("none")
        form.locator("input[name=unfiltered]").check()  # the tiny discriminator rejects most
        for name, value in TINY_TRANSFER.items():
            if name not in ("base_model", "quantization"):
                form.locator(f"input[name={name}]").fill(str(value))

    add_cell(page, "Transfer (Trans-LoRA)", "To the wide model", transfer_form)
    expect(cell_by_title(page, "To the wide model")).to_contain_text("tiny-llama-wide")
    shot(page, "01-transfer-cell")
    live = run_and_watch(page, "To the wide model")

    phases = live.locator("table.phases")
    expect(phases).to_contain_text("Generate synthetic inputs", timeout=60_000)
    expect(phases.locator("tr", has_text="Filter")).to_contain_text("skipped")
    shot(page, "02-transfer-running")
    expect(live.locator("h2 .status")).to_have_text("Succeeded", timeout=180_000)
    for label in ("Generate synthetic inputs", "Teacher answers", "Train student", "Evaluate"):
        expect(phases.locator("tr", has_text=label)).to_contain_text("done")
    expect(live.locator("svg.accuracy-chart g.bar")).to_have_count(3)
    expect(live.locator("table.accuracy")).to_contain_text("Transferred")
    expect(live).to_contain_text("unfiltered")
    expect(live.locator("li.accepted").first).to_contain_text("✓")
    expect(live.get_by_role("button", name=re.compile("^Resume"))).to_have_count(0)
    shot(page, "03-transfer-report")

    with page.expect_download() as download:
        live.get_by_role("link", name=re.compile("Download transferred adapter")).click()
    archive = tmp_path / "transfer.zip"
    download.value.save_as(archive)
    names = zipfile.ZipFile(archive).namelist()
    assert "report.json" in names and any(n.endswith("adapter_config.json") for n in names)
    run = CellRun.objects.filter(cell__title="To the wide model").get()
    assert run.status == RunStatus.SUCCEEDED and run.outputs["report"]["attempts"] == 1
