from __future__ import annotations

from django.contrib import admin

from webapp.core.admin_base import ReadOnlyAdmin
from webapp.projects.models import CellRun


@admin.register(CellRun)
class CellRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "cell", "version", "status", "job", "created_at", "finished_at")
    list_filter = ("status", "cell__kind")
    search_fields = ("=id", "cell__project__name", "cell__project__team__name")
    list_select_related = ("cell", "job")
    exclude = ("outputs",)  # may name server folders; the run page shows them for people
