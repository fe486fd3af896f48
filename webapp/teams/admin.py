from __future__ import annotations

from django.contrib import admin

from webapp.core.admin_base import ReadOnlyAdmin, ReadOnlyTabularInline
from webapp.teams.models import Membership, Team

# Read-only: membership changes go through webapp.teams.services (the last owner stays).


class MembershipInline(ReadOnlyTabularInline):
    model = Membership
    fields = ("user", "role", "created_at")


@admin.register(Team)
class TeamAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "personal", "created_at")
    list_filter = ("personal",)
    search_fields = ("name", "members__username")
    inlines = (MembershipInline,)


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAdmin):
    list_display = ("user", "team", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("user__username", "user__email", "team__name")
    list_select_related = ("user", "team")
