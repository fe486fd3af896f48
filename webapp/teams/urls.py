from django.urls import path

from webapp.teams import views

urlpatterns = [
    path("teams/new/", views.team_new, name="team_new"),
    path("teams/<int:team_id>/", views.team_detail, name="team_detail"),
    path("teams/<int:team_id>/invite/", views.team_invite, name="team_invite"),
    path(
        "teams/members/<int:membership_id>/remove/",
        views.membership_remove_view,
        name="membership_remove",
    ),
    path(
        "teams/members/<int:membership_id>/role/",
        views.membership_role_view,
        name="membership_role",
    ),
    path(
        "teams/invitations/<int:invitation_id>/revoke/",
        views.invitation_revoke_view,
        name="invitation_revoke",
    ),
    path("invitations/<str:token>/", views.invitation_accept_view, name="invitation_accept"),
]
