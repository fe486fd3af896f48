from django.urls import path

from webapp.jobs import views

urlpatterns = [
    path("jobs/<int:job_id>/", views.job_detail, name="job_detail"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel_view, name="job_cancel"),
]
