"""/v1/: the OpenAI-compatible API. Anything else under /v1/ is an OpenAI-shaped 404."""

from django.http import HttpRequest, HttpResponse
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from webapp.api.errors import error_response
from webapp.api.v1 import views_files, views_jobs, views_models


@csrf_exempt
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return error_response(
        404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url"
    )


urlpatterns = [
    path("files", views_files.files_view, name="api_files"),
    path("files/<str:file_id>", views_files.file_view, name="api_file"),
    path("files/<str:file_id>/content", views_files.file_content_view, name="api_file_content"),
    path("fine_tuning/jobs", views_jobs.jobs_view, name="api_jobs"),
    path("fine_tuning/jobs/<str:job_id>", views_jobs.job_view, name="api_job"),
    path("fine_tuning/jobs/<str:job_id>/cancel", views_jobs.job_cancel_view),
    path("fine_tuning/jobs/<str:job_id>/pause", views_jobs.job_pause_view),
    path("fine_tuning/jobs/<str:job_id>/resume", views_jobs.job_resume_view),
    path("fine_tuning/jobs/<str:job_id>/events", views_jobs.job_events_view),
    path("fine_tuning/jobs/<str:job_id>/checkpoints", views_jobs.job_checkpoints_view),
    path("models", views_models.models_view, name="api_models"),
    path("models/<path:model_id>", views_models.model_view, name="api_model"),
    path("chat/completions", views_models.chat_view, name="api_chat"),
    re_path(r"^(?P<rest>.*)$", not_found),
]
