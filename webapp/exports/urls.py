from django.urls import path

from webapp.exports import views

urlpatterns = [
    path("runs/<int:run_id>/exports/", views.export_panel_view, name="export_panel"),
    path("runs/<int:run_id>/exports/new/", views.export_start, name="export_start"),
    path("exports/<int:export_id>/cancel/", views.export_cancel, name="export_cancel"),
    path("exports/<int:export_id>/files/<str:name>", views.export_file, name="export_file"),
    path("exports/<int:export_id>/download.zip", views.export_zip, name="export_zip"),
]
