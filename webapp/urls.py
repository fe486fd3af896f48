"""URL map. Every view below fetches objects through webapp.teams.access.get_for_user,
but the operators' own: admin/ (staff only) and webapp.ops (healthz, readyz, metrics)."""

from django.contrib import admin
from django.urls import include, path

from webapp.api.native.app import api as native_api
from webapp.home import views as home_views

urlpatterns = [
    path("", home_views.home, name="home"),
    path("dashboard/", home_views.dashboard, name="dashboard"),
    path("favicon.ico", home_views.favicon, name="favicon"),
    path("accounts/", include("webapp.accounts.urls")),
    path("", include("webapp.teams.urls")),
    path("", include("webapp.projects.urls")),
    path("", include("webapp.transfers.urls")),
    path("", include("webapp.datasets.urls")),
    path("", include("webapp.jobs.urls")),
    path("", include("webapp.evaluations.urls")),
    path("", include("webapp.exports.urls")),
    path("", include("webapp.api.page_urls")),
    path("v1/", include("webapp.api.v1.urls")),
    path("api/", native_api.urls),
    path("admin/", admin.site.urls),  # operators (staff); Django's own log-in
    path("", include("webapp.ops.urls")),  # healthz, readyz, metrics
]
