"""Fast browser checks, no training: upload limits and bad files, roles, 404, CSRF."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from tests.e2e.helpers import PASSWORD, log_in
from tests.web.worker_harness import Worker
from webapp.accounts.services import user_signup
from webapp.datasets.services import dataset_version_create
from webapp.projects.models import Cell, Project
from webapp.projects.services import cell_create, project_create
from webapp.teams.models import Membership, Role, Team
from webapp.teams.services import team_create

pytestmark = pytest.mark.timeout(300)

CHAT = b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}\n'
# A PNG signature and some non-text bytes: what a user drags in by mistake.
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def upload_payload(name: str, content: bytes) -> dict[str, Any]:
    return {"name": name, "mimeType": "application/octet-stream", "buffer": content}


def user(name: str) -> User:
    return user_signup(username=name, password=PASSWORD, email=f"{name}@example.com")


@pytest.fixture
def lab(transactional_db: None) -> dict[str, Any]:
    """A team with an owner and a viewer, an outsider, and a notebook with every cell kind."""
    owner, viewer, outsider = user("olga"), user("vic"), user("oscar")
    team = team_create(name="Lab", owner=owner)
    Membership.objects.create(team=team, user=viewer, role=Role.VIEWER)
    from django.core.files.uploadedfile import SimpleUploadedFile

    version = dataset_version_create(
        team=team, name="greetings", upload=SimpleUploadedFile("chat.jsonl", CHAT), created_by=owner
    )
    project = project_create(team=team, name="Shared notebook", created_by=owner)
    cell_create(project=project, kind="markdown", config={"text": "# Notes"}, created_by=owner)
    ds = cell_create(
        project=project, kind="dataset", config={"dataset": version.dataset_id}, created_by=owner
    )
    ft = cell_create(
        project=project,
        kind="finetune",
        config={"dataset_cell": ds.pk, "base_model": "tiny-llama", "max_steps": 2},
        created_by=owner,
    )
    cell_create(
        project=project,
        kind="playground",
        config={"model_cell": ft.pk, "prompt": "Hi", "max_new_tokens": 4},
        created_by=owner,
    )
    return {"team": team, "project": project, "version": version, "owner": owner,
            "viewer": viewer, "outsider": outsider}  # fmt: skip


def test_too_large_file_is_refused_in_the_browser_and_by_the_server(
    lab: dict[str, Any], settings: Any, new_page: Callable[..., Page], shot: Callable
) -> None:
    settings.MAX_UPLOAD_BYTES = 1024
    big = upload_payload("big.jsonl", CHAT * 40)  # ~3.9 KB
    team: Team = lab["team"]

    # With JavaScript: dropped on the drop zone, refused before a byte is sent.
    page = new_page()
    log_in(page, "olga")
    page.goto(f"/teams/{team.pk}/datasets/upload/")
    expect(page.locator("#dropzone")).to_contain_text("Limit: 1.0 KB")
    drop = page.evaluate_handle(
        """([name, size]) => { const dt = new DataTransfer();
             dt.items.add(new File(["x".repeat(size)], name)); return dt; }""",
        ["big.jsonl", 4000],
    )
    page.locator("#dropzone").dispatch_event("drop", {"dataTransfer": drop})
    expect(page.locator("#dropzone")).to_contain_text("big.jsonl")
    status = page.locator("#upload-status")
    expect(status).to_have_text("This file is larger than the 1.0 KB limit.")
    expect(status).to_have_class("error")
    expect(page.locator("input[name=name]")).to_have_value("big")  # filled from the file name
    page.get_by_role("button", name="Upload").click()
    expect(status).to_have_text("This file is larger than the 1.0 KB limit.")
    expect(page).to_have_url(re.compile(r"/datasets/upload/$"))
    shot(page, "01-too-large-js")

    # Without JavaScript the form posts as is: the server stops reading and says why.
    plain = new_page(java_script_enabled=False)
    log_in(plain, "olga")
    plain.goto(f"/teams/{team.pk}/datasets/upload/")
    plain.locator("input[name=name]").fill("big")
    plain.locator("input[name=file]").set_input_files(big)
    with plain.expect_navigation() as nav:
        plain.get_by_role("button", name="Upload").click()
    assert nav.value is not None and nav.value.status == 413
    expect(plain.locator("#upload-error")).to_have_text(
        "The file is larger than the 1.0 KB upload limit."
    )
    shot(plain, "02-too-large-server")
    assert not team.datasets.filter(name="big").exists()


def test_binary_file_gets_a_clear_validation_message(
    lab: dict[str, Any], worker: Worker, page: Page, shot: Callable
) -> None:
    log_in(page, "olga")
    page.goto(f"/teams/{lab['team'].pk}/datasets/upload/")
    page.locator("input[name=file]").set_input_files(upload_payload("photo.png", PNG))
    expect(page.locator("input[name=name]")).to_have_value("photo")
    page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(re.compile(r"/dataset-versions/\d+/$"))
    status = page.locator("#version-status")
    expect(status.locator("h2 .status")).to_have_text("Invalid", timeout=180_000)
    problems = status.locator("table.issues tbody tr")
    expect(problems).to_have_count(1)
    expect(problems.first).to_contain_text("binary_file")
    expect(problems.first).to_contain_text("binary file (an image or archive?), not text")
    shot(page, "01-binary-invalid")


def test_viewer_sees_no_edit_controls(
    lab: dict[str, Any], new_page: Callable[..., Page], shot: Callable
) -> None:
    project: Project = lab["project"]
    team: Team = lab["team"]
    n_cells = Cell.objects.filter(project=project).count()

    # The owner's page has the controls the viewer must not get.
    owner = new_page()
    log_in(owner, "olga")
    owner.goto(f"/projects/{project.pk}/")
    expect(owner.locator("li.cell")).to_have_count(n_cells)
    expect(owner.get_by_role("button", name="Run")).to_have_count(2)
    expect(owner.get_by_role("button", name="Delete")).to_have_count(n_cells)
    expect(owner.locator("#add-cell")).to_be_visible()

    viewer = new_page()
    log_in(viewer, "vic")
    viewer.goto(f"/projects/{project.pk}/")
    expect(viewer.get_by_role("heading", name="Shared notebook")).to_be_visible()
    expect(viewer.locator("li.cell")).to_have_count(n_cells)
    for name in ("Run", "Delete", "Save", "Move up", "Move down"):
        expect(viewer.get_by_role("button", name=name)).to_have_count(0)
    expect(viewer.locator("#add-cell")).to_have_count(0)
    expect(viewer.locator("li.cell details", has_text="Edit")).to_have_count(0)
    expect(viewer.get_by_role("link", name="Upload a new version")).to_have_count(0)
    shot(viewer, "01-viewer-notebook")

    viewer.goto(f"/teams/{team.pk}/")
    expect(viewer.locator("h1 .badge")).to_have_text("viewer")
    expect(viewer.get_by_role("button", name="New notebook")).to_have_count(0)
    expect(viewer.get_by_role("link", name="Upload a dataset")).to_have_count(0)
    shot(viewer, "02-viewer-team")

    # Typing the URL of an edit page does not help either.
    response = viewer.goto(f"/teams/{team.pk}/datasets/upload/")
    assert response is not None and response.status == 403
    expect(viewer.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(viewer.locator("main")).to_contain_text("Your role in this team does not allow this")
    expect(viewer.locator("input[type=file]")).to_have_count(0)
    shot(viewer, "03-viewer-upload-forbidden")


def test_outsider_gets_not_found_for_another_teams_notebook(
    lab: dict[str, Any], page: Page, shot: Callable
) -> None:
    log_in(page, "oscar")
    for url in (
        f"/projects/{lab['project'].pk}/",
        f"/teams/{lab['team'].pk}/",
        f"/dataset-versions/{lab['version'].pk}/",
    ):
        response = page.goto(url)
        assert response is not None and response.status == 404, url
        expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
        expect(page.locator("body")).not_to_contain_text("Shared notebook")
    expect(page.get_by_role("link", name="Back to your dashboard")).to_be_visible()
    shot(page, "01-outsider-404")


def test_forged_post_without_csrf_token_is_refused(
    lab: dict[str, Any], page: Page, shot: Callable
) -> None:
    project: Project = lab["project"]
    log_in(page, "olga")
    page.goto(f"/projects/{project.pk}/")
    before = Cell.objects.filter(project=project).count()
    run_cell = Cell.objects.get(project=project, kind="finetune")

    # The session cookie goes along (same browser context); the CSRF token does not.
    forged = {
        f"/projects/{project.pk}/cells/add/": {"kind": "markdown", "text": "pwned"},
        f"/cells/{run_cell.pk}/run/": {},
        f"/cells/{run_cell.pk}/delete/": {},
        f"/teams/{lab['team'].pk}/projects/new/": {"name": "forged"},
    }
    for url, form in forged.items():
        response = page.request.post(url, form=form, max_redirects=0)
        assert response.status == 403, (url, response.status)
        assert "CSRF" in response.text()
    assert Cell.objects.filter(project=project).count() == before
    assert not run_cell.runs.exists()
    assert not Project.objects.filter(name="forged").exists()

    # A page on another site that auto-submits a form to Tunebook.
    target = f"{page.url.split('/projects/')[0]}/teams/{lab['team'].pk}/projects/new/"
    evil = (
        f'<form method="post" action="{target}"><input name="name" value="forged"></form>'
        "<script>document.forms[0].submit()</script>"
    )
    page.route(
        "http://evil.test/**", lambda route: route.fulfill(body=evil, content_type="text/html")
    )
    with page.expect_navigation(url=target) as nav:
        page.goto("http://evil.test/")
    assert nav.value is not None and nav.value.status == 403
    expect(page.locator("body")).to_contain_text("CSRF verification failed")
    shot(page, "01-csrf-403")
    assert not Project.objects.filter(name="forged").exists()


def test_evaluation_form_shows_only_the_chosen_sources_setting(
    lab: dict[str, Any], page: Page, shot: Callable
) -> None:
    log_in(page, "olga")
    page.goto(f"/projects/{lab['project'].pk}/")
    page.locator("#add-cell").get_by_role("link", name="Evaluation", exact=True).click()
    form = page.locator("#add-cell-form form")
    source = form.locator("select[name=source]")
    settings = {
        "bigbench": "select[name=bigbench_task]",
        "dataset_cell": "select[name=dataset_cell]",
        "prompt_dataset": "select[name=prompt_dataset]",
    }
    expect(source).to_have_value("bigbench")  # the default
    for chosen in ("bigbench", "dataset_cell", "prompt_dataset", "bigbench"):
        source.select_option(chosen)
        for key, selector in settings.items():
            field = form.locator(selector)
            if key == chosen:
                expect(field).to_be_visible()
            else:
                expect(field).to_be_hidden()
    shot(page, "01-evaluation-form-bigbench")
