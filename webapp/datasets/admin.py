from __future__ import annotations

from django.contrib import admin

from webapp.core.admin_base import ReadOnlyAdmin, ReadOnlyTabularInline
from webapp.datasets.models import Dataset, DatasetVersion


class DatasetVersionInline(ReadOnlyTabularInline):
    model = DatasetVersion
    fields = ("version", "original_name", "size", "status", "n_examples", "created_at")


@admin.register(Dataset)
class DatasetAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "team", "purpose", "created_at")
    list_filter = ("purpose",)
    search_fields = ("name", "team__name")
    list_select_related = ("team",)
    inlines = (DatasetVersionInline,)
