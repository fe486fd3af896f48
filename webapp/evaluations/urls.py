from django.urls import path

from webapp.evaluations import views

urlpatterns = [
    path("evaluations/<int:evaluation_id>/", views.evaluation_detail, name="evaluation_detail"),
    path(
        "evaluations/<int:evaluation_id>/export.<str:fmt>",
        views.evaluation_export,
        name="evaluation_export",
    ),
    path("evaluations/<int:evaluation_id>/share/", views.evaluation_share, name="evaluation_share"),
    path(
        "evaluations/<int:evaluation_id>/preference-data/",
        views.preference_data,
        name="evaluation_preference_data",
    ),
    path("evaluations/shared/<str:token>/", views.evaluation_shared, name="evaluation_shared"),
    path("verdicts/<int:verdict_id>/vote/", views.verdict_vote, name="verdict_vote"),
    path("verdicts/<int:verdict_id>/diff/", views.verdict_diff, name="verdict_diff"),
    path("teams/<int:team_id>/judges/", views.backends, name="evaluation_backends"),
    path("projects/<int:project_id>/judge-prompts/", views.prompts, name="evaluation_prompts"),
    path("runs/<int:run_id>/best-checkpoint/", views.best_checkpoint, name="best_checkpoint"),
]
