from django import forms

from webapp.projects.cell_kinds import choices


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)


class CellKindForm(forms.Form):
    kind = forms.ChoiceField(choices=choices)
    title = forms.CharField(max_length=100, required=False)


class RecipeImportForm(forms.Form):
    file = forms.FileField(
        required=False, help_text="A .json or .yaml recipe exported from Tunebook."
    )
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        required=False,
        label="…or paste it here",
    )
    name = forms.CharField(
        max_length=100, required=False, help_text="Blank: the name in the recipe."
    )

    def clean(self) -> dict:
        data = super().clean()
        if not data.get("file") and not (data.get("text") or "").strip():
            raise forms.ValidationError("Choose a recipe file or paste one.")
        return data
