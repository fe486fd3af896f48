"""Django form fields built from the engine's declared settings (finetune_core.contracts):
the label, help text, bounds and choices come from the one declaration."""

from __future__ import annotations

from typing import Any

from django import forms

from finetune_core.contracts.settings import Setting

_FIELD_TYPES: dict[type, type[forms.Field]] = {int: forms.IntegerField, float: forms.FloatField}


def setting_field(
    spec: Setting, *, default: Any, prefill: bool = False, blank: str = "— default —"
) -> forms.Field:
    """An optional form field: blank means `default`. `prefill` shows the default in the
    field itself; otherwise the help text names it."""
    shown = default if default is not None else "none"
    help_text = spec.help if prefill else f"{spec.help} Default: {shown}.".strip()
    common: dict[str, Any] = {"label": spec.title, "required": False, "help_text": help_text}
    if prefill:
        common["initial"] = default
    if spec.choices:
        words = dict(spec.choice_labels)
        choices = [(c, words.get(c, c)) for c in spec.choices]
        if not (prefill and default is not None):  # a shown default needs no blank choice
            choices.insert(0, ("", blank))
        return forms.ChoiceField(choices=choices, **common)
    bounds = {"min_value": spec.minimum, "max_value": spec.maximum}
    return _FIELD_TYPES[spec.kind](**common, **{k: v for k, v in bounds.items() if v is not None})


def blank(value: Any) -> bool:
    return value is None or value == ""
