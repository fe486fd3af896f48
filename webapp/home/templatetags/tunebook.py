"""Template helpers: a small, escape-first markdown renderer (no third-party dependency)."""

from __future__ import annotations

import json
import re
from typing import Any

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from webapp.core.example_counts import examples_text
from webapp.core.paths import public_text
from webapp.projects.job_names import job_title

register = template.Library()

_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"\*([^*]+)\*"), r"<em>\1</em>"),
    # Only http(s) links: the text was escaped first, so no javascript: URLs slip through.
    (re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)"), r'<a href="\2" rel="nofollow">\1</a>'),
]


def _inline(text: str) -> str:
    for pattern, repl in _INLINE:
        text = pattern.sub(repl, text)
    return text


@register.filter
def markdown(source: str) -> SafeString:
    out: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    list_tag = "ul"  # the open list's: "ul" for - or * items, "ol" for 1. or 1) items
    code: list[str] | None = None

    def flush() -> None:
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()
        if items:
            body = "".join(f"<li>{_inline(i)}</li>" for i in items)
            out.append(f"<{list_tag}>{body}</{list_tag}>")
            items.clear()

    for raw in (source or "").splitlines():
        line = escape(raw)
        if raw.startswith("```"):
            if code is None:
                flush()
                code = []
            else:
                out.append("<pre><code>" + "\n".join(code) + "</code></pre>")
                code = None
            continue
        if code is not None:
            code.append(line)
        elif m := re.match(r"(#{1,4})\s+(.*)", line):
            flush()
            level = len(m.group(1)) + 1  # h1 is the page title
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := re.match(r"\s*(?:([-*])|\d{1,9}[.)])\s+(.*)", line):
            tag = "ul" if m.group(1) else "ol"
            if paragraph or (items and tag != list_tag):
                flush()
            list_tag = tag
            items.append(m.group(2))
        elif not line.strip():
            flush()
        else:
            if items:
                flush()
            paragraph.append(line.strip())
    if code is not None:
        out.append("<pre><code>" + "\n".join(code) + "</code></pre>")
    flush()
    return mark_safe("\n".join(out))  # noqa: S308 - every piece was escaped above


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def get_item(mapping: dict, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


@register.filter
def report_issues(report: Any) -> list:
    """A validation report's problems, whichever key the validator used."""
    if not isinstance(report, dict):
        return []
    return list(report.get("issues") or report.get("errors") or [])


@register.filter
def token_counts(stats: Any) -> dict | None:
    """Exact token counts when the report has them, else the character-based estimate."""
    if not isinstance(stats, dict):
        return None
    return stats.get("tokens") or stats.get("approx_tokens")


register.filter("job_title", job_title)
register.filter("public", public_text)
register.filter("examples_text", examples_text)
