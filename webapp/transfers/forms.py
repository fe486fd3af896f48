"""Forms of the Trans-LoRA pages (the transfer cell's own form is in kind.py)."""

from __future__ import annotations

from django import forms

from webapp.core.catalog import model_choices
from webapp.transfers.kind import target_choices


class RebaseForm(forms.Form):
    source_model = forms.ChoiceField(label="From base model", choices=model_choices)
    target_model = forms.ChoiceField(label="To base model", choices=target_choices)
    n_synthetic = forms.IntegerField(label="Synthetic samples", min_value=1, initial=250)
    quantization = forms.ChoiceField(choices=[("nf4", "nf4"), ("none", "none")], initial="nf4")
