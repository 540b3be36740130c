"""Admin for follow-up types (reference data) and a read-mostly view of cadence rules.

Rules are changed in the app's own pages (followups:rules), which check overlaps
and location access; here they can only be looked up. Nothing deletes a rule: its
follow-ups would lose the visit types that close them; a rule is switched off
("active" unticked in the app) instead.
"""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from followups.models import CadenceRule, FollowupType


@admin.register(FollowupType)
class FollowupTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "value", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["name", "code"]
    prepopulated_fields = {"code": ["name"]}


@admin.register(CadenceRule)
class CadenceRuleAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "event",
        "interval_display",
        "followup_type",
        "all_locations",
        "max_attempts",
        "lapse_after_days",
        "is_active",
        "edit_in_app",
    ]
    list_filter = ["is_active", "event", "followup_type", "all_locations", "locations"]
    search_fields = ["name", "outreach_plan"]
    list_select_related = ["followup_type"]

    @admin.display(description="interval")
    def interval_display(self, obj: CadenceRule) -> str:
        return obj.interval_display

    @admin.display(description="")
    def edit_in_app(self, obj: CadenceRule) -> str:
        return format_html(
            '<a href="{}">Edit in the app</a>', reverse("followups:rule_edit", args=[obj.pk])
        )

    # Adding and changing go through the app, where overlapping rules are refused.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
