"""Cancelling a playground answer sticks (issue 20 item 9), on a real worker process."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from tests.web.conftest import client_for
from tests.web.test_transfers_worker import cell_create, run_cell, unlocked
from tests.web.test_transfers_worker import start_worker as start_worker  # noqa: F401 - fixture
from tests.web.worker_harness import wait_for
from webapp.jobs.models import Job, JobStatus
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.services import project_create

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _answer(run: CellRun) -> dict[str, Any]:
    answers = CellRun.objects.get(pk=run.pk).outputs.get("answers") or [{}]
    return answers[0]


def _answer_run(project: Any, owner: Any, max_new_tokens: int) -> CellRun:
    # Greedy: the random tiny model sampled at temperature 1 often ends its answer within
    # 40-300 tokens (measured), before the cancel could land; greedy runs to max_new_tokens.
    config = {"base_model": "tiny-llama", "prompt": "Tell a long story.", "temperature": 0.0}
    cell = cell_create(
        project=project,
        kind="playground",
        config={**config, "max_new_tokens": max_new_tokens},
        created_by=owner,
    )
    return run_cell(cell, owner)


def test_cancelling_a_playground_answer_sticks(start_worker, team, owner) -> None:
    worker = start_worker()
    project = unlocked(lambda: project_create(team=team, name="Chat", created_by=owner))
    run = _answer_run(project, owner, 4096)
    wait_for(
        lambda: len(_answer(run).get("text") or "") > 0,
        timeout=120,
        what="the answer to stream",
        worker=worker,
    )
    unlocked(lambda: client_for(owner).post(reverse("run_cancel", args=[run.pk])))
    # The solo worker takes this one only once it has left the cancelled answer.
    after = _answer_run(project, owner, 2)
    wait_for(
        lambda: CellRun.objects.get(pk=after.pk).status == RunStatus.SUCCEEDED,
        timeout=240,
        what="the next answer, after the cancelled one",
        worker=worker,
    )
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED, run.outputs
    assert Job.objects.get(pk=run.job_id).status == JobStatus.CANCELLED
    # It stopped generating: the answer was left unfinished.
    assert _answer(run)["done"] is False
