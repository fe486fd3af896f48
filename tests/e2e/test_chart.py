"""The loss chart as Chromium draws it: lines, not a filled wedge; a lone validation marker."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import ARTIFACTS
from webapp.projects.charts import loss_chart


def test_the_loss_chart_draws_lines_in_the_browser(browser: Any) -> None:
    train = [(1, 2.4), (2, 1.9), (3, 1.5), (4, 1.2), (5, 1.1), (6, 1.0)]
    context = browser.new_context(viewport={"width": 640, "height": 300})
    try:
        page = context.new_page()
        page.set_content(f"<!doctype html><body>{loss_chart(train, [(6, 1.3)], 6)}</body>")
        fills = page.eval_on_selector_all(
            "svg.loss-chart polyline", "els => els.map(e => getComputedStyle(e).fill)"
        )
        assert fills == ["none", "none"], fills  # train and validation: strokes only
        marker = page.locator("svg.loss-chart circle.val")
        box = marker.bounding_box()
        assert box and box["width"] >= 6, box
        assert (
            page.eval_on_selector("svg.loss-chart circle.val", "e => getComputedStyle(e).fill")
            != "none"
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator("svg.loss-chart").screenshot(path=str(ARTIFACTS / "loss-chart.png"))
    finally:
        context.close()
