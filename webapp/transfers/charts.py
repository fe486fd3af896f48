"""The transfer report's bar chart: exact-match accuracy of each model with its bootstrap
95% interval, as inline SVG drawn on the server (no JavaScript)."""

from __future__ import annotations

from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, PAD, BAR = 560, 240, 40, 56
LABELS = {
    "source_adapter": "Source adapter",
    "target_base": "Target base",
    "transferred": "Transferred",
    "ablation_unfiltered": "Unfiltered",
    "ablation_seeds_only": "Seeds only",
}


def accuracy_bars(accuracy: dict[str, dict[str, Any]]) -> SafeString:
    rows = [(k, v) for k, v in accuracy.items() if v and v.get("accuracy") is not None]
    if not rows:
        return mark_safe('<p class="muted">The chart appears once models are evaluated.</p>')
    slot = (WIDTH - 2 * PAD) / len(rows)
    plot = HEIGHT - 2 * PAD

    def y(value: float) -> float:
        return HEIGHT - PAD - plot * max(0.0, min(1.0, value))

    parts = []
    for i, (key, r) in enumerate(rows):
        cx = PAD + slot * (i + 0.5)
        top = y(r["accuracy"])
        low, high = r.get("low"), r.get("high")
        whisker = (
            format_html(
                '<line x1="{x}" y1="{a}" x2="{x}" y2="{b}" class="ci"/>'
                '<line x1="{l}" y1="{a}" x2="{r}" y2="{a}" class="ci"/>'
                '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" class="ci"/>',
                x=f"{cx:.1f}",
                l=f"{cx - 8:.1f}",
                r=f"{cx + 8:.1f}",
                a=f"{y(high):.1f}",
                b=f"{y(low):.1f}",
            )
            if low is not None and high is not None
            else ""
        )
        parts.append(
            format_html(
                '<g class="bar {key}"><title>{label}: {pct}% (95% CI {lo} to {hi}, n={n})'
                '</title><rect x="{x}" y="{top}" width="{w}" height="{h}"/>{whisker}'
                '<text x="{cx}" y="{ty}" class="value" text-anchor="middle">{pct}%</text>'
                '<text x="{cx}" y="{ly}" class="label" text-anchor="middle">{label}</text></g>',
                key=key,
                label=LABELS.get(key, key),
                pct=f"{100 * r['accuracy']:.1f}",
                lo="-" if low is None else f"{100 * low:.1f}%",
                hi="-" if high is None else f"{100 * high:.1f}%",
                n=r.get("n", 0),
                x=f"{cx - BAR / 2:.1f}",
                top=f"{top:.1f}",
                w=BAR,
                h=f"{HEIGHT - PAD - top:.1f}",
                whisker=whisker,
                cx=f"{cx:.1f}",
                ty=f"{min(top, y(high) if high is not None else top) - 6:.1f}",
                ly=HEIGHT - PAD + 16,
            )
        )
    axis = format_html(
        '<line x1="{p}" y1="{b}" x2="{r}" y2="{b}" class="axis"/>'
        '<text x="4" y="{t}" class="label">100%</text><text x="4" y="{b}" class="label">0%</text>',
        p=PAD,
        b=HEIGHT - PAD,
        r=WIDTH - PAD,
        t=PAD + 4,
    )
    return format_html(
        '<svg class="accuracy-chart" viewBox="0 0 {} {}" role="img" '
        'aria-label="Exact-match accuracy with 95% confidence intervals">'
        "<style>rect{{fill:#93c5fd}} .transferred rect{{fill:#2563eb}} .ci{{stroke:#111;"
        "stroke-width:1.5}} .axis{{stroke:#888}} .label,.value{{font-size:11px}}</style>"
        "{}{}</svg>",
        WIDTH,
        HEIGHT,
        axis,
        format_html_join("", "{}", ((p,) for p in parts)),
    )


def paper_bar(accuracy: dict[str, dict[str, Any]]) -> dict[str, bool] | None:
    """The paper's bar: transferred >= target base, and transferred within the source
    adapter's 95% interval or above it. None until all three are measured."""
    try:
        moved = accuracy["transferred"]["accuracy"]
        base = accuracy["target_base"]["accuracy"]
        source = accuracy["source_adapter"]
    except (KeyError, TypeError):
        return None
    if moved is None or base is None or source.get("accuracy") is None:
        return None
    low = source.get("low") if source.get("low") is not None else source["accuracy"]
    return {
        "beats_target_base": moved >= base,
        "matches_source": moved >= low,
        # A source adapter no better than the target base learned nothing to carry over:
        # then "transferred >= base" is met by doing nothing (0% = 0% = 0% is no success).
        "source_learned": source["accuracy"] > base,
    }
