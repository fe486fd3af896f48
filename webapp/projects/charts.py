"""The train/validation loss chart: inline SVG drawn on the server, no JavaScript."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, PAD = 560, 220, 36


def loss_points(history: Sequence[dict[str, Any]]) -> tuple[list[tuple[int, float]], ...]:
    train = [
        (int(h["step"]), float(h["train_loss"])) for h in history if h.get("train_loss") is not None
    ]
    val = [(int(h["step"]), float(h["val_loss"])) for h in history if h.get("val_loss") is not None]
    return train, val


def loss_chart(
    train: Sequence[tuple[int, float]], val: Sequence[tuple[int, float]], total_steps: int | None
) -> SafeString:
    points = [*train, *val]
    if not points:
        return mark_safe('<p class="muted">The loss chart appears after the first steps.</p>')
    x_max = max([total_steps or 0, *(s for s, _ in points)]) or 1
    y_min = min(v for _, v in points)
    y_max = max(v for _, v in points)
    span = (y_max - y_min) or 1.0

    def xy(step: int, value: float) -> str:
        x = PAD + (WIDTH - 2 * PAD) * step / x_max
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * (value - y_min) / span
        return f"{x:.1f},{y:.1f}"

    def line(series: Sequence[tuple[int, float]], css: str) -> SafeString:
        if not series:
            return mark_safe("")
        coords = " ".join(xy(s, v) for s, v in sorted(series))
        dots = format_html_join(
            "",
            '<circle cx="{}" cy="{}" r="4" class="{}"/>',
            # Validation points are sparse, and a lone first point draws no line: mark them.
            ((*xy(s, v).split(","), css) for s, v in series if css == "val" or len(series) == 1),
        )
        return format_html('<polyline points="{}" class="{}"/>{}', coords, css, dots)

    axes = format_html(
        '<line x1="{p}" y1="{b}" x2="{r}" y2="{b}" class="axis"/>'
        '<line x1="{p}" y1="{p}" x2="{p}" y2="{b}" class="axis"/>'
        '<text x="{p}" y="{t}" class="label">{ymax}</text>'
        '<text x="{p}" y="{yb}" class="label">{ymin}</text>'
        '<text x="{r}" y="{yb}" class="label" text-anchor="end">step {xmax}</text>',
        p=PAD,
        b=HEIGHT - PAD,
        r=WIDTH - PAD,
        t=PAD - 6,
        yb=HEIGHT - PAD + 16,
        ymax=f"{y_max:.3f}",
        ymin=f"{y_min:.3f}",
        xmax=x_max,
    )
    legend = format_html(
        '<text x="{}" y="16" class="label train">— train</text>'
        '<text x="{}" y="16" class="label val">● validation</text>',
        WIDTH - 190,
        WIDTH - 110,
    )
    return format_html(
        '<svg class="loss-chart" viewBox="0 0 {} {}" role="img" aria-label="Loss chart">'
        # Colour the stroke and the markers only: a class rule with `fill` would outrank
        # `polyline{fill:none}` and paint the area under the line as a filled wedge.
        "<style>.train{{stroke:#2563eb}} .val{{stroke:#dc2626}}"
        " circle.train,text.train{{fill:#2563eb}} circle.val,text.val{{fill:#dc2626}}"
        " svg.loss-chart polyline{{stroke-width:2;fill:none}} .axis{{stroke:#888}}"
        " .label{{font-size:11px;stroke:none}}</style>"
        "{}{}{}{}</svg>",
        WIDTH,
        HEIGHT,
        axes,
        line(train, "train"),
        line(val, "val"),
        legend,
    )
