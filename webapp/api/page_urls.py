from django.urls import path

from webapp.api import pages

urlpatterns = [
    path("teams/<int:team_id>/api-keys/", pages.api_keys, name="api_keys"),
    path("api-keys/<int:key_id>/revoke/", pages.api_key_revoke_view, name="api_key_revoke"),
]
