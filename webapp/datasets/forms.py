from django import forms

from webapp.datasets.models import DatasetFormat


class UploadForm(forms.Form):
    # Field order matters: the name must arrive before the file in the multipart body.
    name = forms.CharField(
        max_length=100, help_text="Same name as an existing dataset: new version."
    )
    format = forms.ChoiceField(choices=DatasetFormat.choices, required=False)
    file = forms.FileField()
