from django.urls import path

from webapp.projects import live_views, recipe_views, run_stream, run_views, views

urlpatterns = [
    path("teams/<int:team_id>/projects/new/", views.project_new, name="project_new"),
    path("projects/<int:project_id>/", views.project_detail, name="project_detail"),
    path(
        "projects/<int:project_id>/recipe.<str:fmt>",
        recipe_views.recipe_export,
        name="recipe_export",
    ),
    path("teams/<int:team_id>/projects/import/", recipe_views.recipe_import, name="recipe_import"),
    path("projects/<int:project_id>/cells/add/", views.cell_add, name="cell_add"),
    path("projects/<int:project_id>/cells/estimate/", views.cell_estimate, name="cell_estimate"),
    path("cells/<int:cell_id>/edit/", views.cell_edit, name="cell_edit"),
    path("cells/<int:cell_id>/delete/", views.cell_remove, name="cell_delete"),
    path("cells/<int:cell_id>/move/", views.cell_reorder, name="cell_move"),
    path("cells/<int:cell_id>/run/", views.cell_run, name="cell_run"),
    path("cells/<int:cell_id>/live/", live_views.cell_live, name="cell_live"),
    path("runs/<int:run_id>/", run_views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/stream/", run_stream.run_stream, name="run_stream"),
    path("runs/<int:run_id>/cancel/", run_views.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/resume/", run_views.run_resume, name="run_resume"),
    path("runs/<int:run_id>/final/", run_views.run_select_final, name="run_select_final"),
    path("runs/<int:run_id>/artifacts.zip", run_views.run_artifacts, name="run_artifacts"),
]
