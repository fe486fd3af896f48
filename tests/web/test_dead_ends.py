"""No dead ends: every page is linked, and an empty or blocked state says what to do next."""

from __future__ import annotations

from django.urls import reverse

from tests.web.conftest import client_for, make_user
from tests.web.test_transfers import make_transferable, source_run, transfer_cell  # noqa: F401
from webapp.api.v1.services import api_file_delete
from webapp.jobs.services import job_fail, job_start
from webapp.projects.models import Cell, CellRun, RunStatus
from webapp.projects.services import cell_create, cell_run_create, project_create
from webapp.teams.models import Team
from webapp.teams.services import invitation_accept, invitation_create, team_create


def test_api_keys_and_judges_are_linked_from_the_team_navigation(team, project, viewer) -> None:
    client = client_for(viewer)
    keys, judges = (
        reverse("api_keys", args=[team.pk]),
        reverse("evaluation_backends", args=[team.pk]),
    )
    for page in ("team_detail", "project_detail"):
        pk = team.pk if page == "team_detail" else project.pk
        body = client.get(reverse(page, args=[pk])).content.decode()
        nav = body.split('<nav class="team-nav"', 1)[1].split("</nav>", 1)[0]
        assert f'href="{keys}"' in nav and f'href="{judges}"' in nav, page
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert f'href="{keys}"' in dashboard and f'href="{judges}"' in dashboard
    assert client.get(keys).status_code == 200 and client.get(judges).status_code == 200


def test_a_personal_team_says_why_it_has_no_invite_form(owner) -> None:
    personal = Team.objects.get(memberships__user=owner, personal=True)
    body = client_for(owner).get(reverse("team_detail", args=[personal.pk])).content.decode()
    assert "personal team" in body and reverse("team_new") in body
    assert reverse("team_invite", args=[personal.pk]) not in body


def test_an_invitation_by_username_is_on_the_invitees_dashboard(team, owner) -> None:
    newcomer, other = make_user("nina"), make_user("nick")
    invitation = invitation_create(team=team, invited_by=owner, invitee="NINA")
    accept = reverse("invitation_accept", args=[invitation.token])
    body = client_for(newcomer).get(reverse("dashboard")).content.decode()
    assert "Invitations" in body and team.name in body and accept in body
    assert accept not in client_for(other).get(reverse("dashboard")).content.decode()
    invitation_accept(invitation=invitation, user=newcomer)
    assert accept not in client_for(newcomer).get(reverse("dashboard")).content.decode()


def test_adding_a_dataset_cell_without_datasets_offers_an_upload_link(owner) -> None:
    team = team_create(name="Empty lab", owner=owner)
    project = project_create(team=team, name="Blank", created_by=owner)
    url = reverse("project_detail", args=[project.pk]) + "?add=dataset"
    for headers in ({}, {"HTTP_HX_REQUEST": "true"}):
        body = client_for(owner).get(url, **headers).content.decode()
        assert reverse("dataset_upload", args=[team.pk]) in body
        assert "no training dataset yet" in body and 'name="dataset"' not in body


def cell_html(body: str, cell: Cell) -> str:
    return body.split(f'id="cell-{cell.pk}"', 1)[1].split("</li>\n", 1)[0]


def test_a_transfer_whose_source_cannot_be_transferred_cannot_run(
    transfer_cell: Cell,  # noqa: F811 - the fixture
    source_run: CellRun,  # noqa: F811 - the fixture
    owner,
) -> None:
    client = client_for(owner)
    notebook = reverse("project_detail", args=[transfer_cell.project_id])
    run_url = reverse("cell_run", args=[transfer_cell.pk])
    cell = cell_html(client.get(notebook).content.decode(), transfer_cell)
    assert "<button disabled" in cell and run_url not in cell
    assert cell.count("cannot be transferred") == 1  # the reason, once
    # A POST made anyway (an old page, a script) is refused with the reason, and queues nothing.
    page = client.post(run_url, follow=True)
    assert "Its source adapter is not transferable yet" in page.content.decode()
    assert not CellRun.objects.filter(cell=transfer_cell).exists()
    # Once the source is made transferable, Run comes back: the state is read live.
    make_transferable(source_run)
    cell = cell_html(client.get(notebook).content.decode(), transfer_cell)
    assert "<button disabled" not in cell and run_url in cell


def test_a_failed_transfer_of_a_blocked_source_shows_its_error_once_and_no_resume(
    transfer_cell: Cell,  # noqa: F811 - the fixture
    owner,
) -> None:
    error = "The source adapter has no discriminator: " + "x" * 300  # long: wraps, not cut
    run = cell_run_create(cell=transfer_cell, created_by=owner)  # queued before it was blocked
    job_start(job_id=run.job_id)
    CellRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, outputs={"error": error})
    job_fail(job_id=run.job_id, error=error)
    client = client_for(owner)
    page = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert page.count(error) == 1 and "Resume" not in page
    notebook = client.get(reverse("project_detail", args=[transfer_cell.project_id]))
    assert cell_html(notebook.content.decode(), transfer_cell).count(error) == 1


def test_a_deleted_v1_file_leaves_its_notebook_saying_what_happened(
    project, dataset_version, owner
) -> None:
    # As the /v1 API builds it: a dataset cell pinned to the uploaded file's version.
    ds = cell_create(
        project=project,
        kind="dataset",
        config={"dataset": dataset_version.dataset_id, "version": dataset_version.version},
        created_by=owner,
    )
    api_file_delete(version=dataset_version)
    body = client_for(owner).get(reverse("project_detail", args=[project.pk])).content.decode()
    cell = cell_html(body, ds)
    assert "was deleted" in cell and "no version yet" not in cell
    assert reverse("dataset_upload", args=[project.team_id]) in cell
    # Its fine-tune cell cannot run on the deleted file, and says why.
    tune = cell_create(
        project=project,
        kind="finetune",
        config={"dataset_cell": ds.pk, "base_model": "tiny-llama", "keep_transferable": False},
        created_by=owner,
    )
    client = client_for(owner)
    body = client.get(reverse("project_detail", args=[project.pk])).content.decode()
    cell = cell_html(body, tune)
    assert "<button disabled" in cell and reverse("cell_run", args=[tune.pk]) not in cell
    assert f"The data of {ds} was deleted" in cell
    page = client.post(reverse("cell_run", args=[tune.pk]), follow=True).content.decode()
    assert f"The data of {ds} was deleted" in page and not CellRun.objects.filter(cell=tune)


def test_a_failed_fine_tune_without_a_checkpoint_offers_no_resume(
    project, dataset_version, owner
) -> None:
    ds = cell_create(
        project=project, kind="dataset", config={"dataset": dataset_version.dataset_id},
        created_by=owner,
    )  # fmt: skip
    config = {"dataset_cell": ds.pk, "base_model": "tiny-llama", "keep_transferable": False}
    tune = cell_create(project=project, kind="finetune", config=config, created_by=owner)
    run = cell_run_create(cell=tune, created_by=owner)
    job_start(job_id=run.job_id)
    CellRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED)
    job_fail(job_id=run.job_id, error="The worker stopped before its first checkpoint.")
    url = reverse("run_detail", args=[run.pk])
    assert "Resume" not in client_for(owner).get(url).content.decode()  # nothing to resume
    outputs = {"checkpoints": [{"step": 2, "train_loss": 1.0, "val_loss": None}]}
    CellRun.objects.filter(pk=run.pk).update(outputs=outputs)
    assert "Resume from last checkpoint" in client_for(owner).get(url).content.decode()
