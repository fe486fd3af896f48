"""On a worker with one slot, a chat sent while a fine-tune trains is answered between the
fine-tune's optimizer steps (workers/between_steps.py), not after it: a real worker, a
real fine-tune, a real chat on the Celery path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.web.test_finetune_worker import finished, job_of, notebook, run_cell, start_worker
from tests.web.worker_harness import Worker, wait_for
from webapp.api.models import ChatCompletion, CompletionStatus
from webapp.api.v1.services import chat_completion_create
from webapp.jobs.models import Job, JobStatus
from webapp.ops.models import WorkerHost
from webapp.projects.models import CellRun, RunStatus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
__all__ = ["start_worker"]  # the fixture

STEPS = 400


def test_a_chat_is_answered_between_a_fine_tunes_steps(
    start_worker: Callable[..., Worker], team: Any, owner: Any
) -> None:
    worker = start_worker(INTERACTIVE_WAIT_S="1")
    cells = notebook(team, owner, worker, max_steps=STEPS, eval_every=1000, save_every=1000)
    run = run_cell(cells["finetune"], owner)
    wait_for(lambda: job_of(run).progress_current >= 3, timeout=120, what="steps", worker=worker)

    chat = chat_completion_create(
        team=team, created_by=owner, model="tiny-llama", target={"base_model": "tiny-llama"},
        messages=[{"role": "user", "content": "What is 2 + 2?"}], max_tokens=8, temperature=0,
    )  # fmt: skip
    answered = wait_for(
        lambda: (
            (row := ChatCompletion.objects.get(pk=chat.pk)).status == CompletionStatus.SUCCEEDED
            and row
        ),
        timeout=90,
        what="the chat's answer",
        worker=worker,
    )
    training = job_of(run)
    assert training.status == JobStatus.RUNNING, "answered only after the fine-tune"
    assert 3 <= training.progress_current < STEPS
    assert answered.completion_tokens == 8 and answered.text
    assert WorkerHost.objects.filter(name=answered.served_by).exists()
    assert Job.objects.get(pk=answered.job_id).status == JobStatus.SUCCEEDED
    assert f"answering api.chat job {answered.job_id} between the steps" in worker.tail(100_000)

    # The fine-tune goes on where it was, every step once; the chat's own message, taken
    # after it, finds its job finished and answers nothing twice.
    wait_for(finished(run), timeout=240, what="the fine-tune", worker=worker)
    done = CellRun.objects.get(pk=run.pk)
    assert job_of(run).status == JobStatus.SUCCEEDED and done.status == RunStatus.SUCCEEDED
    assert [h["step"] for h in done.outputs["history"]] == list(range(1, STEPS + 1))
    assert ChatCompletion.objects.get(pk=chat.pk).text == answered.text
    assert Job.objects.get(pk=answered.job_id).deliveries == 1
