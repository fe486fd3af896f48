"""A disabled button looks disabled (issue 27 re-walk): a transfer cell whose source cannot
be transferred had its Run button disabled, but drawn in the same blue as every Run."""

from __future__ import annotations

from typing import Any

from tests.web.worker_harness import ROOT

CSS = ROOT / "webapp" / "static" / "tunebook.css"


def test_a_disabled_button_is_drawn_unlike_an_enabled_one(browser: Any) -> None:
    page = browser.new_page()
    try:
        page.set_content(
            f"<style>{CSS.read_text(encoding='utf-8')}</style>"
            '<button id="on">Run</button><button id="off" disabled title="why">Run</button>'
            '<button id="off-danger" class="danger" disabled>Delete</button>'
        )
        style = "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).cursor]"
        on = page.eval_on_selector("#on", style)
        off = page.eval_on_selector("#off", style)
        off_danger = page.eval_on_selector("#off-danger", style)
        assert on[1] == "pointer" and off[1] == "not-allowed", (on, off)
        assert off[0] != on[0] and off_danger[0] == off[0], (on, off, off_danger)
    finally:
        page.close()
