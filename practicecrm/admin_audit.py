"""The audit trail in the Django admin: readable by staff, changeable by nobody.

The trail grows by every create, change, delete and view — millions of entries in
a group's first years — so its list page never asks a question whose cost grows
with the table: no exact count past `LargeTablePaginator.EXACT_UP_TO` rows, no
year list computed from every timestamp (auditlog's `date_hierarchy`), no resource
type list built with DISTINCT over every entry (auditlog's ResourceTypeFilter).
"""

import json
from functools import cached_property

from auditlog.admin import LogEntryAdmin
from auditlog.filters import CIDFilter
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet

admin.site.unregister(LogEntry)


class LargeTablePaginator(Paginator):
    """Counts exactly up to EXACT_UP_TO rows; above that, PostgreSQL's estimate.

    The estimate is the planner's row count for the same query (EXPLAIN, no
    execution), which for the unfiltered trail is the table statistics ANALYZE
    keeps. The page shows it as "about N" (admin/auditlog/logentry/pagination.html).
    """

    EXACT_UP_TO = 10_000

    @cached_property
    def count(self) -> int:  # type: ignore[override]
        queryset: QuerySet = self.object_list.order_by()  # type: ignore[attr-defined]
        capped = queryset[: self.EXACT_UP_TO + 1].count()
        self.estimated = capped > self.EXACT_UP_TO
        if not self.estimated:
            return capped
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return queryset.count()
        sql, params = queryset.values("pk").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        return max(capped, int(plan[0]["Plan"]["Plan Rows"]))


class AuditedModelFilter(admin.SimpleListFilter):
    """Filter by the kind of record — offered from the models the trail registers,
    not found by scanning the trail (auditlog's own filter reads every entry)."""

    title = "resource type"
    parameter_name = "resource_type"

    def lookups(self, request, model_admin):
        types = ContentType.objects.get_for_models(*auditlog.get_models()).values()
        return sorted(((ct.pk, ct.name) for ct in types), key=lambda item: str(item[1]))

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.filter(content_type_id=self.value())


@admin.register(LogEntry)
class ReadOnlyLogEntryAdmin(LogEntryAdmin):
    """auditlog's admin already refuses add and change; this also refuses delete,
    including the bulk "delete selected" action, for every user.

    Entries carry patient data (what changed), so only superusers — the practice's
    admins — may read them here: a model-level "view log entry" permission must not
    open a side door around the per-location access rule.
    """

    actions = None
    date_hierarchy = None
    list_filter = [
        "action",
        AuditedModelFilter,
        ("timestamp", admin.DateFieldListFilter),
        CIDFilter,
    ]
    paginator = LargeTablePaginator
    show_full_result_count = False
    # Facet counts ("Show counts") would count every filter choice over the trail.
    show_facets = admin.ShowFacets.NEVER

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
