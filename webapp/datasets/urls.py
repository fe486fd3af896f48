from django.urls import path

from webapp.datasets import downloads, views

urlpatterns = [
    path("teams/<int:team_id>/datasets/", views.dataset_list, name="dataset_list"),
    path("teams/<int:team_id>/datasets/upload/", views.dataset_upload, name="dataset_upload"),
    path("datasets/<int:dataset_id>/", views.dataset_detail, name="dataset_detail"),
    path(
        "dataset-versions/<int:version_id>/",
        views.dataset_version_detail,
        name="dataset_version_detail",
    ),
    path(
        "dataset-versions/<int:version_id>/download/",
        downloads.dataset_version_download,
        name="dataset_version_download",
    ),
]
