from django import forms

from webapp.projects.cell_kinds import choices


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)


class CellKindForm(forms.Form):
    kind = forms.ChoiceField(choices=choices)
    title = forms.CharField(max_length=100, required=False)
