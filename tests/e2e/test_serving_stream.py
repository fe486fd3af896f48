"""A playground answer streams into the page from the serving process (issue 25), in a real
browser: a real `python -m workers.serve` and its wire, a real Celery worker whose playground
task sends the answer there. The run's outputs hold the text only once the answer is done,
so text in the page while the answer is unfinished came through runs/<id>/stream/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.api.test_serving import Serve, serving_url
from tests.e2e.helpers import log_in
from tests.e2e.test_live_notebook import run_in_place
from tests.web.conftest import make_user
from tests.web.worker_harness import Worker
from webapp.projects.models import CellRun
from webapp.projects.services import cell_create, project_create
from webapp.teams.services import team_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Text in an answer that has no "N tokens · reason" line yet: streamed, not from the row.
STREAMED = """() => [...document.querySelectorAll("article.answer")].some(
  (a) => !a.querySelector("small") && a.querySelector("pre").textContent.length > 20)"""


@pytest.fixture
def serving_stack(
    transactional_db: None, live_server: Any, broker_url: str, tmp_path: Path, settings: Any
) -> Iterator[Worker]:
    url = serving_url(tmp_path)
    settings.SERVING_URL = url
    serve = Serve(url, tmp_path)
    worker = Worker(
        broker_url=broker_url, data_dir=tmp_path, media_root=tmp_path / "media",
        log=tmp_path / "worker.log", SERVING_URL=url,
    )  # fmt: skip
    try:
        yield worker
    finally:
        worker.stop()
        serve.stop()


def test_a_playground_answer_streams_into_the_page(
    page: Page, serving_stack: Worker, shot: Callable[[Any, str], Path]
) -> None:
    user = make_user("streamer")
    project = project_create(
        team=team_create(name="Stream lab", owner=user), name="Chat", created_by=user
    )
    config = {"base_model": "tiny-llama", "prompt": "Tell a long story.", "temperature": 0.0}
    cell = cell_create(
        project=project, kind="playground", config={**config, "max_new_tokens": 1500},
        created_by=user,
    )  # fmt: skip
    log_in(page, "streamer")
    page.goto(f"/projects/{project.pk}/")
    answers = run_in_place(page, cell)
    page.wait_for_function(STREAMED, timeout=120_000)
    shot(page, "01-streaming")
    assert not CellRun.objects.get(cell=cell).outputs["answers"][0].get("text")
    expect(answers.locator("h4 .status")).to_have_text("Succeeded", timeout=180_000)
    expect(answers.locator("article.answer small")).to_contain_text("1500 tokens")
    shot(page, "02-done")
    final = CellRun.objects.get(cell=cell).outputs["answers"][0]["text"]
    assert answers.locator("pre.answer-text").text_content().strip() == final.strip()
