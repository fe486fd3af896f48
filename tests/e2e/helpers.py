"""Small browser helpers shared by the e2e tests."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

PASSWORD = "correct-horse-battery-9"
TIMEOUT_MS = 15_000


def log_in(page: Page, username: str, password: str = PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def sign_up(page: Page, username: str, password: str = PASSWORD) -> None:
    page.goto("/accounts/signup/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password1]").fill(password)
    page.locator("input[name=password2]").fill(password)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def choose_option(scope: Page | Locator, name: str, text: str) -> None:
    """Pick the <option> whose text contains `text` in the <select name=...> inside scope."""
    select = scope.locator(f"select[name={name}]")
    value = select.locator("option", has_text=text).first.get_attribute("value")
    assert value, f"no option {text!r} in select {name!r}"
    select.select_option(value)


def cell_by_title(page: Page, title: str) -> Locator:
    return page.locator("li.cell").filter(
        has=page.locator("strong", has_text=re.compile(f"^{re.escape(title)}$"))
    )


def run_and_watch(page: Page, title: str) -> Locator:
    """Run the cell titled `title` from the notebook and open its live view."""
    cell = cell_by_title(page, title)
    cell.get_by_role("button", name="Run").click()
    # The Run button swaps the cell's live part in, with the message, without a reload.
    expect(cell.locator(".messages")).to_contain_text(f"{title}: run v1 queued.")
    links = cell.get_by_role("link", name=re.compile("^(live view|details)$"))
    links.first.click()
    return page.locator("#run-live")
