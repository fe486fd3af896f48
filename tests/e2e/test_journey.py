"""The main journey in a real browser, on a real Celery worker and the real SmolLM2-135M.

Sign up, create a notebook, upload BIG-bench data (and a broken file), add a dataset
cell, fine-tune for a few steps, watch the live page, then compare base and fine-tuned
answers in a playground cell. Screenshots: test-artifacts/e2e/<test name>/NN-*.png.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.helpers import cell_by_title, choose_option, run_and_watch, sign_up
from tests.web.worker_harness import ROOT, Worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

DEMO = ROOT / "finetune_core" / "assets" / "demo" / "sports_understanding_200.jsonl"
MODEL = "smollm2-135m-instruct"
STEPS = 2
QUESTION = (
    "Determine whether the following statement or statements are plausible or implausible:\n"
    "Joao Moutinho caught the screen pass in the NFC championship."
)
BAD_LINES = [
    '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}',
    '{"messages": [{"role": "user", "content": "broken"',
    '{"messages": [{"role": "robot", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]}',
]

# Every value the progress bar shows, across htmx's swaps of the live fragment.
PROGRESS_RECORDER = """() => {
  window.progressSeen = [];
  const note = () => document.querySelectorAll("#run-live progress").forEach((bar) => {
    const v = Number(bar.getAttribute("value"));
    if (window.progressSeen.at(-1) !== v) window.progressSeen.push(v);
  });
  note();
  new MutationObserver(note).observe(document.querySelector("main"), {subtree: true, childList: true});
}"""


def sports_slice(folder: Path, n: int = 40) -> Path:
    path = folder / "sports_40.jsonl"
    lines = DEMO.read_text(encoding="utf-8").splitlines()[:n]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def upload(page: Page, team_url: str, name: str, file: Path) -> None:
    page.goto(team_url)
    page.get_by_role("link", name="Upload a dataset").click()
    expect(page.get_by_role("heading", name="Upload a dataset")).to_be_visible()
    page.wait_for_load_state("load")  # upload.js (deferred) has attached its handlers
    page.locator("input[name=file]").set_input_files(file)
    expect(page.locator("#dropzone")).to_contain_text(file.name)
    page.locator("input[name=name]").fill(name)
    page.get_by_role("button", name="Upload").click()
    # The XHR upload shows its progress bar, then the version page takes over.
    expect(page).to_have_url(re.compile(r"/dataset-versions/\d+/$"))
    expect(page.get_by_role("heading", name=f"{name} v1")).to_be_visible()


def add_cell(page: Page, kind_label: str, title: str, fill: Callable[[Locator], None]) -> None:
    page.locator("#add-cell").get_by_role("link", name=kind_label, exact=True).click()
    form = page.locator("#add-cell-form form")
    expect(form.locator("input[name=kind]")).to_have_value(re.compile(".+"))
    form.locator("input[name=title]").fill(title)
    fill(form)
    form.get_by_role("button", name=re.compile(r"^Add \w+ cell$")).click()
    expect(cell_by_title(page, title)).to_be_visible()


def chart_points(page: Page) -> int:
    points = page.locator("svg.loss-chart polyline.train").get_attribute("points") or ""
    return len(points.split())


def test_sign_up_to_playground_in_the_browser(
    page: Page, worker: Worker, tmp_path: Path, shot: Callable[[Any, str], Path]
) -> None:
    started = time.monotonic()
    sign_up(page, "nina")
    shot(page, "01-signed-up-dashboard")

    # A notebook in the personal team.
    page.get_by_role("link", name="nina's team").click()
    team_url = page.url
    page.locator("input[name=name]").fill("Sports notebook")
    page.get_by_role("button", name="New notebook").click()
    expect(page.get_by_role("heading", name="Sports notebook")).to_be_visible()
    expect(page.locator("ol.cells")).to_contain_text("This notebook is empty.")
    notebook_url = page.url
    shot(page, "02-empty-notebook")

    # Upload 40 BIG-bench examples; the worker validates them while the page polls.
    upload(page, team_url, "sports", sports_slice(tmp_path))
    status = page.locator("#version-status")
    expect(status.locator("h2 .status")).to_have_text("Valid", timeout=180_000)
    expect(status).to_contain_text("40 examples.")
    expect(status.get_by_role("heading", name="Token statistics")).to_be_visible()
    expect(status.locator(".preview .example").first).to_contain_text("plausible")
    expect(status.locator("table.issues")).to_have_count(0)
    shot(page, "03-upload-valid-report")

    # A broken file: every problem with its line number and code.
    bad = tmp_path / "broken.jsonl"
    bad.write_text("\n".join(BAD_LINES) + "\n", encoding="utf-8")
    upload(page, team_url, "broken", bad)
    expect(status.locator("h2 .status")).to_have_text("Invalid", timeout=60_000)
    rows = status.locator("table.issues tbody tr")
    expect(rows.filter(has_text="invalid_json")).to_contain_text("line 2")
    expect(rows.filter(has_text="unrecognized_role")).to_contain_text("line 3")
    expect(rows.filter(has_text="line 1")).to_have_count(0)
    shot(page, "04-upload-invalid-report")

    # Dataset cell: the notebook shows the validated version and its report.
    page.goto(notebook_url)
    add_cell(page, "Dataset", "Sports data", lambda f: choose_option(f, "dataset", "sports"))
    data_cell = cell_by_title(page, "Sports data")
    expect(data_cell.locator(".status")).to_have_text("Valid")
    expect(data_cell).to_contain_text("40 examples")
    expect(data_cell.get_by_role("heading", name="Token statistics")).to_be_visible()
    shot(page, "05-dataset-cell")

    # Fine-tune cell: a few steps of QLoRA on SmolLM2-135M, with a live estimate.
    def finetune_form(form: Locator) -> None:
        choose_option(form, "dataset_cell", "Sports data")
        form.locator("select[name=base_model]").select_option(MODEL)
        form.locator("select[name=preset]").select_option("quick")
        # QLoRA as a user gets it: the default 4-bit NF4 base.
        form.locator("select[name=quantization]").select_option("nf4")
        # The discriminator job would hold the one worker before the playground; the
        # keep-transferable path has its own worker test (tests/web/test_transfers*).
        form.locator("select[name=keep_transferable]").select_option("False")
        for name, value in {
            "max_steps": STEPS, "batch_size": 2, "max_length": 128,
            "eval_every": STEPS, "save_every": STEPS, "learning_rate": 0.001,
        }.items():  # fmt: skip
            form.locator(f"input[name={name}]").fill(str(value))
        form.locator("input[name=max_length]").dispatch_event("change")
        expect(page.locator("#add-estimate")).to_contain_text(f"Pre-flight estimate: {STEPS} steps")

    add_cell(page, "Fine-tune", "QLoRA run", finetune_form)
    tune = cell_by_title(page, "QLoRA run")
    expect(tune.locator(".estimate").first).to_contain_text(f"{STEPS} steps")
    shot(page, "06-finetune-cell")

    tune.get_by_role("button", name="Run").click()
    expect(page.locator(".messages")).to_contain_text("QLoRA run: run v1 queued.")
    tune = cell_by_title(page, "QLoRA run")
    tune.get_by_role("link", name="live view").click()
    expect(page.get_by_role("heading", name="QLoRA run · run v1")).to_be_visible()
    live = page.locator("#run-live")
    shot(page, "07-run-queued")
    page.evaluate(PROGRESS_RECORDER)

    # The progress bar moves while htmx polls, then the run finishes.
    bar = live.locator("progress")
    expect(bar).to_have_attribute("max", str(STEPS), timeout=120_000)
    expect(bar).to_have_attribute("value", re.compile(r"^[1-9]"), timeout=120_000)
    seen_while_running = int(bar.get_attribute("value") or 0)
    shot(page, "08-run-progress")
    expect(live.locator("h2 .status")).to_have_text("Succeeded", timeout=150_000)
    expect(bar).to_have_attribute("value", str(STEPS))
    assert 1 <= seen_while_running <= STEPS
    seen: list[int] = page.evaluate("window.progressSeen")
    assert seen == sorted(seen) and seen[-1] == STEPS and len(set(seen)) >= 2, seen
    expect(live).to_contain_text(f"step {STEPS} / {STEPS} (100%)")
    expect(live.locator("svg.loss-chart polyline.train")).to_have_count(1)
    assert chart_points(page) >= 2, page.locator("svg.loss-chart").inner_html()
    expect(live.locator("table.checkpoints tbody tr")).to_have_count(1)
    expect(live.locator("svg.loss-chart polyline.val")).to_have_count(1)
    expect(live.locator("ol.events li").first).to_be_visible()
    expect(live.get_by_role("link", name=re.compile("Download adapter"))).to_be_visible()
    expect(live).not_to_have_attribute("hx-trigger", re.compile(".+"))  # polling stopped
    shot(page, "09-run-finished-chart")

    # Playground: the same question to the base model and the fine-tuned one.
    page.goto(notebook_url)

    def playground_form(form: Locator) -> None:
        choose_option(form, "model_cell", "QLoRA run")
        form.locator("textarea[name=prompt]").fill(QUESTION)
        form.locator("input[name=max_new_tokens]").fill("8")

    add_cell(page, "Playground", "Compare", playground_form)
    live = run_and_watch(page, "Compare")
    expect(live.locator("h2 .status")).to_have_text("Succeeded", timeout=120_000)
    answers = live.locator("article.answer")
    expect(answers).to_have_count(2)
    expect(answers.nth(0).locator("h3")).to_have_text(f"Base model ({MODEL})")
    expect(answers.nth(1).locator("h3")).to_have_text("Fine-tuned (QLoRA run v1)")
    for i in range(2):
        expect(answers.nth(i).locator("pre.answer-text")).not_to_contain_text("▍")
        expect(answers.nth(i).locator("small")).to_contain_text(re.compile(r"\d+ tokens"))
    shot(page, "10-playground-answers")
    print(f"journey took {time.monotonic() - started:.0f} s (budget: 240 s on an idle 2-core CPU)")
