"""An owner removes a member in the browser: htmx form, confirm dialog, CSRF header."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Dialog, expect

from tests.e2e.helpers import PASSWORD, log_in
from webapp.accounts.services import user_signup
from webapp.teams.models import Membership, Role, Team
from webapp.teams.services import team_create

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def lab(transactional_db: None) -> Team:
    owner = user_signup(username="olga", password=PASSWORD)
    team = team_create(name="Lab", owner=owner)
    viewer = user_signup(username="vic", password=PASSWORD)
    Membership.objects.create(team=team, user=viewer, role=Role.VIEWER)
    return team


def test_owner_removes_a_member_after_confirming(lab: Team, new_page: Callable[..., Any]) -> None:
    url = f"/teams/{lab.pk}/"
    member = new_page()
    log_in(member, "vic")
    member.goto(url)
    expect(member.get_by_role("heading", name="Lab")).to_be_visible()
    owner = new_page()
    log_in(owner, "olga")
    owner.goto(url)
    card = owner.locator("#members")
    row = card.locator("li", has_text="vic")
    questions: list[str] = []

    def answer(accept: bool) -> Callable[[Dialog], None]:
        def handle(dialog: Dialog) -> None:
            questions.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        return handle

    owner.once("dialog", answer(False))
    row.get_by_role("button", name="Remove").click()
    expect(row).to_be_visible()
    assert Membership.objects.filter(team=lab, user__username="vic").exists()
    owner.once("dialog", answer(True))
    row.get_by_role("button", name="Remove").click()
    expect(card.locator(".msg.success")).to_have_text("vic is no longer a member of Lab.")
    expect(card.locator("li", has_text="vic")).to_have_count(0)
    assert (
        questions
        == [
            "Remove vic from Lab? Their API keys for this team stop working; "
            "jobs they started keep running."
        ]
        * 2
    )
    assert member.goto(url).status == 404
