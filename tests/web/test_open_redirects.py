"""A `next` address supplied by the caller never sends the browser to another site."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.web.conftest import PASSWORD, client_for
from webapp.projects.models import CellRun

HOSTILE = ["//evil.com", "/\\evil.com", "https://evil.com", "/\\/evil.com", "\\\\evil.com"]


def _signup(next_url: str):
    return client_for(None).post(
        f"{reverse('signup')}?next={next_url}",
        {"username": "nina", "password1": PASSWORD, "password2": PASSWORD},
    )


@pytest.mark.parametrize("next_url", HOSTILE)
def test_signup_refuses_next_to_another_site(next_url: str, db) -> None:
    response = _signup(next_url)
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")


def test_signup_follows_next_on_this_site(db) -> None:
    response = _signup(reverse("team_new"))
    assert response["Location"] == reverse("team_new")


@pytest.mark.parametrize("next_url", HOSTILE)
def test_transferable_train_refuses_next_to_another_site(
    next_url: str, owner, cell_run: CellRun
) -> None:
    response = client_for(owner).post(
        reverse("transferable_train", args=[cell_run.pk]), {"next": next_url}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("run_detail", args=[cell_run.pk])


def test_transferable_train_follows_next_on_this_site(owner, cell_run: CellRun) -> None:
    back = reverse("project_detail", args=[cell_run.cell.project_id]) + f"#cell-{cell_run.cell_id}"
    response = client_for(owner).post(
        reverse("transferable_train", args=[cell_run.pk]), {"next": back}
    )
    assert response["Location"] == back


@pytest.mark.parametrize("next_url", HOSTILE)
def test_login_refuses_next_to_another_site(next_url: str, owner) -> None:
    response = client_for(None).post(
        f"{reverse('login')}?next={next_url}", {"username": "olga", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
