from django import forms

from webapp.datasets.models import DatasetFormat
from webapp.projects.catalog import DEFAULT_MODEL, model_choices


def _preview_choices() -> list[tuple[str, str]]:
    return [("", "None (estimate tokens from characters)"), *model_choices()]


class UploadForm(forms.Form):
    # Field order matters: the name must arrive before the file in the multipart body.
    name = forms.CharField(
        max_length=100, help_text="Same name as an existing dataset: new version."
    )
    format = forms.ChoiceField(choices=DatasetFormat.choices, required=False)
    preview_model = forms.ChoiceField(
        choices=_preview_choices,
        initial=DEFAULT_MODEL,
        required=False,
        label="Preview with",
        help_text="Rows are shown, and tokens counted, with this base model's chat template.",
    )
    file = forms.FileField()
