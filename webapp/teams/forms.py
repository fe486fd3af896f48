from django import forms

from webapp.teams.models import Role


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100)


class InvitationForm(forms.Form):
    invitee = forms.CharField(max_length=254, label="Username or e-mail")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.EDITOR)
