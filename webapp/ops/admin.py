"""The operators' admin for jobs (read-only, with the re-queue action of ops.services,
which needs the apps above jobs, so it lives here rather than in jobs) and for the worker
hosts' records."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from webapp.core.admin_base import ReadOnlyAdmin, ReadOnlyTabularInline
from webapp.jobs.models import Job, JobEvent
from webapp.ops.models import WorkerHost
from webapp.ops.services import job_operator_requeue
from webapp.ops.workers import measured_generation, measured_throughput


class JobEventInline(ReadOnlyTabularInline):
    model = JobEvent
    fields = ("created_at", "level", "message")


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "team", "status", "created_at", "finished_at", "heartbeat_at")
    list_filter = ("status", "kind")
    search_fields = ("=id", "kind", "team__name", "error")
    list_select_related = ("team",)
    date_hierarchy = "created_at"
    inlines = (JobEventInline,)
    actions = ("requeue",)

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.change_job")

    @admin.action(
        description="Re-queue the selected failed or cancelled jobs", permissions=["requeue"]
    )
    def requeue(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        done = 0
        for job in queryset:
            try:
                job_operator_requeue(job=job, by=request.user)
            except ValidationError as exc:
                self.message_user(
                    request, f"Job #{job.pk}: {' '.join(exc.messages)}", messages.ERROR
                )
            else:
                done += 1
        if done:
            self.message_user(request, f"Re-queued {done} job(s).", messages.SUCCESS)


@admin.register(WorkerHost)
class WorkerHostAdmin(ReadOnlyAdmin):
    list_display = (
        "name", "state", "device", "device_name", "memory", "nf4_path", "queue_list",
        "model_list", "last_seen_at",
    )  # fmt: skip
    search_fields = ("name", "host", "device_name")
    readonly_fields = ("measured", "generation")

    @admin.display(description="state")
    def state(self, host: WorkerHost) -> str:
        return host.state.label

    @admin.display(description="device memory")
    def memory(self, host: WorkerHost) -> str:
        size = host.device_memory_bytes
        return f"{size / 2**30:.1f} GiB" if size else "?"

    @admin.display(description="queues")
    def queue_list(self, host: WorkerHost) -> str:
        return ", ".join(host.queues)

    @admin.display(description="cached models")
    def model_list(self, host: WorkerHost) -> str:
        return ", ".join(host.cached_models) or "none"

    @admin.display(description="measured training throughput")
    def measured(self, host: WorkerHost) -> str:
        return "; ".join(measured_throughput(host)) or "no finished fine-tune yet"

    @admin.display(description="measured generation throughput")
    def generation(self, host: WorkerHost) -> str:
        return "; ".join(measured_generation(host)) or "no answer served yet"
