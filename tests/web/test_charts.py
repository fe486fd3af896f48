"""The loss chart's SVG: series are lines (never filled areas) and a lone point is a marker."""

from __future__ import annotations

import re

from webapp.projects.charts import loss_chart

STYLE = re.compile(r"<style>(.*?)</style>", re.S)
RULE = re.compile(r"([^{}]+)\{([^}]*)\}")


def matches(compound: str, tag: str, css_class: str) -> bool:
    """Does a compound selector such as `polyline.train` or `.val` select <tag class=css_class>?"""
    element, *classes = compound.split(".")
    return element in ("", tag) and all(c == css_class for c in classes)


def specificity(selector: str) -> tuple[int, int]:
    parts = selector.split()
    return sum(p.count(".") for p in parts), sum(1 for p in parts if not p.startswith("."))


def winning_fill(svg: str, tag: str, css_class: str) -> str | None:
    """The `fill` the chart's own stylesheet gives <tag class=css_class>: the cascade's winner."""
    best: tuple[tuple[int, int], int, str] | None = None
    for order, (selectors, body) in enumerate(RULE.findall(STYLE.search(svg).group(1))):
        decls = dict(d.split(":", 1) for d in body.split(";") if ":" in d)
        if "fill" not in decls:
            continue
        for selector in selectors.split(","):
            if matches(selector.split()[-1], tag, css_class):
                candidate = (specificity(selector), order, decls["fill"].strip())
                best = max(best, candidate) if best else candidate
    return best[2] if best else None


def test_the_rule_reader_sees_the_old_wedge_bug() -> None:
    # The stylesheet that painted a wedge: a class rule outranks the element rule.
    old = (
        "<svg><style>.train{stroke:#2563eb;fill:#2563eb} polyline{stroke-width:2;fill:none}</style>"
    )
    assert winning_fill(old, "polyline", "train") == "#2563eb"


def test_every_series_is_a_line_not_a_filled_area() -> None:
    train = [(1, 2.0), (2, 1.5), (3, 1.2), (4, 1.1)]
    svg = loss_chart(train, [(2, 1.6), (4, 1.3)], 10)
    assert svg.count("<polyline") == 2
    for series in ("train", "val"):
        assert winning_fill(svg, "polyline", series) == "none", series
        # The markers and the legend keep the series' colour.
        assert winning_fill(svg, "circle", series) not in (None, "none"), series


def test_a_single_validation_point_is_a_visible_marker() -> None:
    svg = loss_chart([(1, 2.0), (2, 1.5), (3, 1.2)], [(3, 1.3)], 3)
    markers = re.findall(r'<circle cx="[\d.]+" cy="[\d.]+" r="([\d.]+)" class="val"/>', svg)
    assert len(markers) == 1 and float(markers[0]) >= 4
    assert winning_fill(svg, "circle", "val") not in (None, "none")
    assert "● validation" in svg  # the legend shows validation as a marker, not a dash
