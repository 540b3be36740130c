"""The audit trail in the Django admin: readable by staff, changeable by nobody."""

from auditlog.admin import LogEntryAdmin
from auditlog.models import LogEntry
from django.contrib import admin

admin.site.unregister(LogEntry)


@admin.register(LogEntry)
class ReadOnlyLogEntryAdmin(LogEntryAdmin):
    """auditlog's admin already refuses add and change; this also refuses delete,
    including the bulk "delete selected" action, for every user.

    Entries carry patient data (what changed), so only superusers — the practice's
    admins — may read them here: a model-level "view log entry" permission must not
    open a side door around the per-location access rule.
    """

    actions = None

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False
