"""Judge prompt templates: which placeholders each kind uses, how a template is checked,
and how it is filled in.

A template is user text. str.format would evaluate format specs (`{question:>300000000}`
allocates 300 MB), attribute and index lookups (`{question.x}`) and positional fields, so
templates are parsed with string.Formatter().parse, only plain named fields from a known
set are accepted, and rendering substitutes those fields as plain text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from string import Formatter

from finetune_core.errors import FinetuneError

# The placeholders each prompt kind must use; a kind may use no others.
PROMPT_FIELDS: dict[str, tuple[str, ...]] = {
    "pairwise": ("question", "answer_a", "answer_b"),
    "pairwise-reference": ("question", "reference", "answer_a", "answer_b"),
    "single": ("question", "answer"),
    "single-reference": ("question", "reference", "answer"),
}


class PromptTemplateError(FinetuneError, ValueError):
    """A judge prompt template that is not plain text with plain named placeholders."""


def _names(allowed: Iterable[str]) -> str:
    return ", ".join("{" + name + "}" for name in allowed)


def _refusal(field: str, spec: str | None, conversion: str | None, allowed: Iterable[str]) -> str:
    shown = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
    return (
        f"Placeholder {{{shown}}} is not allowed: use only plain names, {_names(allowed)}, "
        "with no format spec, conversion, index or attribute."
    )


def _parts(text: str, allowed: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(literal text, field name or None) pairs; raises on anything but a plain allowed name."""
    try:
        parsed = list(Formatter().parse(text))
    except ValueError as exc:
        raise PromptTemplateError(
            f"Stray brace in the prompt ({exc}); write {{{{ and }}}} for literal braces."
        ) from None
    parts: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None and (spec or conversion or field not in allowed):
            raise PromptTemplateError(_refusal(field, spec, conversion, allowed))
        parts.append((literal, field))
    return parts


def prompt_check(text: str, *, kind: str) -> None:
    """Refuse a template for `kind` that uses anything but its placeholders, or misses one."""
    if kind not in PROMPT_FIELDS:
        raise PromptTemplateError(
            f"Unknown prompt kind {kind!r}; one of {', '.join(PROMPT_FIELDS)}."
        )
    fields = PROMPT_FIELDS[kind]
    used = {field for _, field in _parts(text, fields)}
    missing = [f for f in fields if f not in used]
    if missing:
        raise PromptTemplateError(f"The prompt must contain {_names(missing)}.")


def prompt_render(text: str, fields: Mapping[str, str]) -> str:
    """Fill a template's placeholders with `fields`, as plain text (no format specs)."""
    return "".join(
        literal + ("" if field is None else str(fields[field]))
        for literal, field in _parts(text, tuple(fields))
    )
