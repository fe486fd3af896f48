from django import forms

from webapp.evaluations.models import PromptKind


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
