from __future__ import annotations

from typing import Any

from django import forms

from webapp.datasets.models import DatasetPurpose
from webapp.datasets.selectors import datasets_for_purpose
from webapp.evaluations.models import PromptKind
from webapp.teams.models import Team


class JudgeBackendForm(forms.Form):
    name = forms.CharField(max_length=100)
    base_url = forms.URLField(
        label="Base URL",
        assume_scheme="https",
        max_length=500,
        help_text="e.g. https://api.openai.com/v1 or http://vllm-host:8000/v1. Private and "
        "loopback addresses are refused unless the operator allows the host.",
    )
    model = forms.CharField(max_length=200, help_text="e.g. gpt-4o")
    api_key = forms.CharField(
        label="API key",
        widget=forms.PasswordInput(render_value=False),
        required=False,
        help_text="Stored encrypted; never shown again.",
    )
    price_prompt_1k = forms.FloatField(
        label="Price per 1k prompt tokens", min_value=0, required=False, initial=0.0
    )
    price_completion_1k = forms.FloatField(
        label="Price per 1k completion tokens",
        min_value=0,
        required=False,
        initial=0.0,
        help_text="Prices count against an evaluation's budget cap; 0: free or unknown.",
    )


class JudgePromptForm(forms.Form):
    kind = forms.ChoiceField(choices=PromptKind.choices)
    system = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}), max_length=20_000)
    user = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8}),
        max_length=20_000,
        help_text="Placeholders, as plain names only: {question}, {answer_a}, {answer_b} "
        "(pairwise), {answer} (single), {reference} (reference-guided). Write {{ and }} for "
        "literal braces.",
    )


class PreferenceDataForm(forms.Form):
    """Where "Make preference data" puts its version: a fine-tuning dataset of the team,
    or a new one."""

    dataset = forms.ModelChoiceField(
        queryset=None,
        required=False,
        empty_label="A new dataset",
        help_text="The pairs become this dataset's next version.",
    )
    name = forms.CharField(max_length=100, required=False, label="New dataset's name")

    def __init__(self, *args: Any, team: Team, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["dataset"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = datasets_for_purpose(team_id=team.pk, purpose=DatasetPurpose.TRAINING)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("dataset") and not (data.get("name") or "").strip():
            raise forms.ValidationError("Pick a dataset, or name a new one.")
        return data
