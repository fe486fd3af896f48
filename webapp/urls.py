"""URL map. Every view below fetches objects through webapp.teams.access.get_for_user."""

from django.urls import include, path

from webapp.api.native.app import api as native_api
from webapp.core import views as core_views

urlpatterns = [
    path("", core_views.home, name="home"),
    path("dashboard/", core_views.dashboard, name="dashboard"),
    path("accounts/", include("webapp.accounts.urls")),
    path("", include("webapp.teams.urls")),
    path("", include("webapp.projects.urls")),
    path("", include("webapp.transfers.urls")),
    path("", include("webapp.datasets.urls")),
    path("", include("webapp.jobs.urls")),
    path("", include("webapp.evaluations.urls")),
    path("", include("webapp.api.page_urls")),
    path("v1/", include("webapp.api.urls")),
    path("api/", native_api.urls),
]
