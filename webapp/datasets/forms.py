from django import forms

from webapp.core.catalog import DEFAULT_MODEL, model_choices
from webapp.datasets.models import FORMAT_CHOICES, DatasetPurpose


def _preview_choices() -> list[tuple[str, str]]:
    return [("", "None (estimate tokens from characters)"), *model_choices()]


class UploadForm(forms.Form):
    # Field order matters: the name must arrive before the file in the multipart body.
    name = forms.CharField(
        max_length=100, help_text="Same name as an existing dataset: new version."
    )
    purpose = forms.ChoiceField(
        choices=DatasetPurpose.choices,
        initial=DatasetPurpose.TRAINING,
        required=False,  # absent (older clients): a new dataset is fine-tuning data
        help_text="Fine-tuning data: conversations to train on (chat, prompt/completion, "
        "Alpaca, BIG-bench, CSV). Evaluation prompts: questions to compare models on "
        '(JSONL of {"prompt": ..., optional "reference"/"target", "category"}, or a '
        "BIG-bench task.json).",
    )
    format = forms.ChoiceField(choices=FORMAT_CHOICES, required=False)
    preview_model = forms.ChoiceField(
        choices=_preview_choices,
        initial=DEFAULT_MODEL,
        required=False,
        label="Preview with",
        help_text="Rows are shown, and tokens counted, with this base model's chat template "
        "(fine-tuning data only).",
    )
    file = forms.FileField()
