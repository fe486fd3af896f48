from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp.core.forms import error_text
from webapp.jobs.models import Job
from webapp.jobs.selectors import job_events
from webapp.jobs.services import job_cancel
from webapp.teams.access import get_for_user, role_of
from webapp.teams.models import ROLE_CAN


@login_required
@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_for_user(Job.objects.select_related("team"), request.user, job_id)
    context = {
        "job": job,
        "team": job.team,
        "events": job_events(job=job),
        "can_edit": role_of(request.user, job.team) in ROLE_CAN["edit"],
    }
    template = "jobs/_job_status.html" if request.htmx else "jobs/job_detail.html"
    return render(request, template, context)


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, job_id: int) -> HttpResponse:
    job = get_for_user(Job, request.user, job_id, need="edit")
    try:
        job_cancel(job=job, by=request.user)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    return redirect("job_detail", job_id=job.pk)
