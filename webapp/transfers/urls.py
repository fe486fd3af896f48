from django.urls import path

from webapp.transfers import views

urlpatterns = [
    path("runs/<int:run_id>/transferable/", views.transferable_panel, name="transferable_panel"),
    path(
        "runs/<int:run_id>/transferable/train/",
        views.transferable_train,
        name="transferable_train",
    ),
    path("runs/<int:run_id>/transferred.zip", views.transfer_download, name="transfer_download"),
    path("projects/<int:project_id>/rebase/", views.project_rebase, name="project_rebase"),
]
