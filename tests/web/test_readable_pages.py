"""Pages speak to people: settings by label, cells by number, jobs by name, no server paths.

The last test trains on a real Celery worker and walks the main pages afterwards; every
page any web test renders is also scanned for server paths (tests/web/page_scan.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse

from tests.web.conftest import client_for
from tests.web.page_scan import PAGES, server_path_leaks
from tests.web.test_finetune_worker import finished, job_of, notebook, run_cell, start_worker
from tests.web.worker_harness import wait_for
from webapp.core.catalog import model_choices
from webapp.core.paths import public_text
from webapp.jobs.models import Job
from webapp.projects.cell_kinds import cell_reference
from webapp.projects.models import Cell, CellRun

__all__ = ["start_worker"]  # the fixture, imported for the real-worker test below


def settings_of(body: str, cell: Cell) -> dict[str, str]:
    """The <dt>/<dd> pairs of one cell's settings list on the notebook page."""
    part = body.split(f'id="cell-{cell.pk}"', 1)[1].split("</dl>", 1)[0]
    return dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", part))


def test_public_text_keeps_data_paths_relative_and_hides_other_host_paths(settings) -> None:
    data = Path(settings.DATA_DIR)
    assert public_text(f"adapter saved to {data / 'runs/2/adapter'}") == (
        "adapter saved to runs/2/adapter"
    )
    assert public_text(f"cannot read {settings.MEDIA_ROOT}/datasets/a.jsonl: gone") == (
        "cannot read datasets/a.jsonl: gone"
    )
    assert public_text("wrote /tmp/pytest-1/x/report.json.") == "wrote report.json."
    assert public_text(f"{settings.BASE_DIR}/finetune_core/cli.py") == "finetune_core/cli.py"
    # A checkout outside the usual host folders (CI's is under /check) is still this server's.
    settings.BASE_DIR = "/check/work/main"
    assert public_text("see /check/work/main/finetune_core/cli.py.") == "see finetune_core/cli.py."
    assert public_text("in /check/work/main.") == "in the server's data folder."
    assert public_text("/check/work/mainframe/a") == "/check/work/mainframe/a"  # not ours
    # API routes, URLs, ratios and plain words stay as they are.
    for text in ("POST /v1/files", "see https://host/tmp/a/b", "3 tokens/s", "a/b", None):
        assert public_text(text) == ("" if text is None else text)


def test_cells_show_settings_by_label_and_references_by_number_and_title(
    cells: dict[str, Cell], owner
) -> None:
    ds, ft = cells["dataset"], cells["finetune"]
    Cell.objects.filter(pk=ds.pk).update(title="Greetings")
    Cell.objects.filter(pk=ft.pk).update(config={**ft.config, "keep_transferable": True})
    body = client_for(owner).get(reverse("project_detail", args=[ft.project_id])).content.decode()
    shown = settings_of(body, ft)
    assert shown["Dataset cell"] == f"cell {ds.position} · Greetings"
    # An untitled cell is named by its kind, its number said once.
    assert cell_reference(ft) == f"cell {ft.position} · Fine-tune"
    assert shown["Keep transferable"] == "Yes"
    assert shown["Base model"] == dict(model_choices())["tiny-llama"]  # the catalog's label
    assert "dataset_cell" not in shown and "keep_transferable" not in shown
    assert settings_of(body, ds)["Dataset"] == "greetings"  # the dataset's name, not its id
    # The edit form names the cells it offers the same way (a dataset cell with its data).
    option = f'<option value="{ds.pk}" selected>cell {ds.position} · Greetings · “greetings” v1'
    assert option in body.split(f'id="cell-{ft.pk}"', 1)[1]


def test_job_pages_name_jobs_for_people(cell_run: CellRun, owner) -> None:
    job = Job.objects.get(pk=cell_run.job_id)
    cell = cell_run.cell
    body = client_for(owner).get(reverse("job_detail", args=[job.pk])).content.decode()
    title = f"Fine-tune · cell {cell.position} in {cell.project} (run v{cell_run.version})"
    assert f"<h1>{title}</h1>" in body
    team_page = client_for(owner).get(reverse("team_detail", args=[cell.project.team_id]))
    for page in (body, team_page.content.decode()):
        assert title in page and "cell.finetune" not in page


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_no_page_shows_a_server_path_after_a_finished_run(
    start_worker, team, owner, viewer, tmp_path: Path
) -> None:
    worker = start_worker()
    cells = notebook(team, owner, worker, max_steps=2, eval_every=2, save_every=2)
    run = run_cell(cells["finetune"], owner)
    wait_for(finished(run), timeout=120, what="training", worker=worker)
    job, run = job_of(run), CellRun.objects.get(pk=run.pk)
    # The engine names the files it wrote by their full path: the pages must not.
    assert any(str(tmp_path) in e.message for e in job.events.all())
    version = cells["dataset"].config["dataset"]
    client = client_for(viewer)
    PAGES.clear()
    for url in (
        reverse("dashboard"),
        reverse("team_detail", args=[team.pk]),
        reverse("project_detail", args=[cells["project"].pk]),
        reverse("run_detail", args=[run.pk]),
        reverse("job_detail", args=[job.pk]),
        reverse("dataset_list", args=[team.pk]),
        reverse("dataset_detail", args=[version]),
    ):
        assert client.get(url).status_code == 200, url
    client.get(reverse("run_detail", args=[run.pk]), HTTP_HX_REQUEST="true")
    assert len(PAGES) == 8 and server_path_leaks() == []
    job_page = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert re.search(r"saved to runs/\d+/", job_page), "the adapter's folder, relative"
