"""The leaderboard chart: one bar per candidate with its 95% CI, inline SVG, no JavaScript."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH, ROW, LABEL_W, PAD = 560, 26, 190, 12
RIGHT = 40  # room for the value printed after a whisker that reaches the axis's end


def ci_chart(rows: Sequence[dict[str, Any]]) -> SafeString:
    """rows: label, value, ci_low, ci_high (and scale); the axis spans 0..max(1, highs)."""
    if not rows:
        return mark_safe('<p class="muted">No judged results to chart.</p>')
    top = max(1.0, *(float(r.get("ci_high") or r["value"]) for r in rows))
    if rows[0].get("scale") == "rating":
        top = 10.0
    plot = WIDTH - LABEL_W - PAD - RIGHT
    height = ROW * len(rows) + 24

    def x(v: float | None) -> str:
        # Strings: format_html escapes its arguments, so numbers are formatted here.
        return f"{LABEL_W + plot * max(0.0, min(float(v or 0.0), top)) / top:.1f}"

    def bar(i: int, r: dict[str, Any]) -> SafeString:
        y = 8 + i * ROW
        lo, hi = r.get("ci_low"), r.get("ci_high")
        whisker = (
            format_html(
                '<line x1="{}" y1="{}" x2="{}" y2="{}" class="ci"/>'
                '<line x1="{}" y1="{}" x2="{}" y2="{}" class="ci"/>'
                '<line x1="{}" y1="{}" x2="{}" y2="{}" class="ci"/>',
                x(lo),
                y + 9,
                x(hi),
                y + 9,
                x(lo),
                y + 4,
                x(lo),
                y + 14,
                x(hi),
                y + 4,
                x(hi),
                y + 14,
            )  # fmt: skip
            if lo is not None and hi is not None
            else mark_safe("")
        )
        return format_html(
            '<text x="{}" y="{}" class="label" text-anchor="end">{}</text>'
            '<rect x="{}" y="{}" width="{}" height="14" class="bar"><title>{}: {} '
            "[{}, {}]</title></rect>{}"
            '<text x="{}" y="{}" class="label">{}</text>',
            LABEL_W - 6, y + 13, r["label"][:32],
            LABEL_W, y + 2, f"{float(x(r['value'])) - LABEL_W:.1f}", r["label"], _fmt(r["value"]),
            _fmt(lo), _fmt(hi), whisker,
            f"{float(x(hi if hi is not None else r['value'])) + 4:.1f}", y + 13, f"{r['value']:.2f}",
        )  # fmt: skip

    half = (
        format_html(
            '<line x1="{}" y1="4" x2="{}" y2="{}" class="half"/>',
            x(0.5),
            x(0.5),
            height - 16,
        )
        if top == 1.0
        else mark_safe("")
    )
    return format_html(
        '<svg class="ci-chart" viewBox="0 0 {} {}" style="width:100%;max-width:560px" role="img" aria-label="Leaderboard with 95% '
        'confidence intervals"><style>.bar{{fill:#93c5fd}} .ci{{stroke:#1e3a8a;stroke-width:2}}'
        " .half{{stroke:#aaa;stroke-dasharray:3 3}} .label{{font-size:11px}}</style>{}{}"
        '<text x="{}" y="{}" class="label">0</text>'
        '<text x="{}" y="{}" class="label" text-anchor="end">{}</text></svg>',
        WIDTH,
        height,
        half,
        format_html_join("", "{}", ((bar(i, r),) for i, r in enumerate(rows))),
        LABEL_W,
        height - 4,
        LABEL_W + plot,
        height - 4,
        f"{top:g}",
    )


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"
