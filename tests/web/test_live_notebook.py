"""The notebook's live cells (issue 27): each runnable cell's latest run, its status,
progress and outputs, come from a per-cell fragment that polls itself while a run is live
and comes back without the trigger once every run is settled. The browser journey is
tests/e2e/test_live_notebook.py."""

from __future__ import annotations

import html

from django.urls import reverse

from tests.web.conftest import client_for
from webapp.jobs.services import job_progress
from webapp.projects.models import CellRun, RunStatus
from webapp.projects.run_lifecycle import cell_run_progress, cell_run_settle, cell_run_start
from webapp.projects.services import cell_create, cell_run_create

POLL = 'hx-trigger="every 2s"'


def fragment(client, cell) -> str:
    response = client.get(reverse("cell_live", args=[cell.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def test_cell_fragment_polls_while_its_run_is_live_and_stops_once_settled(
    cells, cell_run, viewer
) -> None:
    client, cell = client_for(viewer), cells["finetune"]
    url = reverse("cell_live", args=[cell.pk])
    page = client.get(reverse("project_detail", args=[cell.project_id])).content.decode()
    assert f'id="cell-live-{cell.pk}" hx-get="{url}" {POLL}' in page
    queued = fragment(client, cell)
    assert POLL in queued and 'class="status queued">Queued' in queued

    run = cell_run_start(run_id=cell_run.pk, task_id="t-1")
    job_progress(job_id=run.job_id, current=3, total=12, metrics={"train_loss": 1.25})
    running = fragment(client, cell)
    assert POLL in running and 'class="status running">Running' in running
    assert '<progress max="12" value="3">' in running and "1.2500" in running

    cell_run_settle(run=run, outcome=RunStatus.SUCCEEDED, outputs={"checkpoints": []})
    settled = fragment(client, cell)
    assert 'class="status succeeded">Succeeded' in settled
    assert "hx-trigger" not in settled and "hx-get" not in settled  # htmx stops polling here


def test_run_button_swaps_in_the_cells_live_part_with_its_message(cells, editor) -> None:
    client, cell = client_for(editor), cells["finetune"]
    response = client.post(reverse("cell_run", args=[cell.pk]), HTTP_HX_REQUEST="true")
    body = html.unescape(response.content.decode())
    assert response.status_code == 200 and body.lstrip().startswith(
        f'<div class="cell-live" id="cell-live-{cell.pk}"'
    )
    assert f"{cell}: run v1 queued." in body and POLL in body
    # Shown once, in the cell: the next page does not repeat it.
    page = client.get(reverse("project_detail", args=[cell.project_id])).content.decode()
    assert "run v1 queued." not in page
    # Without htmx the form still posts and comes back to the notebook.
    plain = client.post(reverse("cell_run", args=[cell.pk]))
    assert plain.status_code == 302 and CellRun.objects.filter(cell=cell).count() == 2


def test_a_blocked_run_says_why_in_the_cell(project, owner) -> None:
    ft = cell_create(project=project, kind="playground", config={"prompt": "Hi"}, created_by=owner)
    ft.config["model_cell"] = 10**6  # its fine-tune cell is gone
    ft.save(update_fields=["config"])
    response = client_for(owner).post(reverse("cell_run", args=[ft.pk]), HTTP_HX_REQUEST="true")
    body = html.unescape(response.content.decode())
    assert response.status_code == 200 and 'class="msg error"' in body
    assert not CellRun.objects.filter(cell=ft).exists() and "hx-trigger" not in body


def test_playground_answers_stream_into_the_cell(project, owner, viewer) -> None:
    cell = cell_create(
        project=project,
        kind="playground",
        config={"base_model": "tiny-llama", "prompt": "Say hi"},
        created_by=owner,
    )
    run = cell_run_start(run_id=cell_run_create(cell=cell, created_by=owner).pk, task_id="t-2")
    answer = {"label": "Base model (tiny-llama)", "adapter": None, "text": "Hel", "done": False}
    outputs = {"model": "tiny-llama", "messages": [], "answers": [answer]}
    cell_run_progress(run=run, outputs=outputs)
    client = client_for(viewer)
    assert "Hel▍" in fragment(client, cell)  # the cursor: more is coming
    answer.update(text="Hello there", done=True, completion_tokens=2, finish_reason="stop")
    cell_run_settle(run=run, outcome=RunStatus.SUCCEEDED, outputs=outputs)
    done = fragment(client, cell)
    assert "Hello there</pre>" in done and "2 tokens · stop" in done and "hx-trigger" not in done
