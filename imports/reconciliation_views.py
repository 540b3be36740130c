"""The reconciliation page: the old tool's recall dates against PracticeCRM's.

Practice managers and admins (VIEW_REPORTS) at the location only; a location or
source they cannot see is a 404, as everywhere else.
"""

import datetime as dt

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from imports import reconciliation
from imports.models import ImportBatch, ImportSource
from locations.models import Location

PAGE_SIZE = 50
MAX_DAYS = 366


def _get_location_for_user(request: HttpRequest, locations: list[Location]) -> Location:
    """The ?location= the user may report on (404 otherwise); by default the one
    imported into last."""
    wanted = request.GET.get("location", "")
    if not wanted:
        # Where the user last imported from an old tool, else the first location.
        latest = (
            ImportBatch.objects.filter(source__location__in=locations, dry_run=False)
            .order_by("-created_at")
            .values_list("source__location_id", flat=True)
            .first()
        )
        return next((loc for loc in locations if loc.pk == latest), locations[0])
    found = next((loc for loc in locations if str(loc.pk) == wanted), None)
    if found is None:
        raise Http404("No such location among yours.")
    return found


def _get_source(request: HttpRequest, sources: list[ImportSource]) -> ImportSource | None:
    """The ?source= (404 when not one of these); else the last one imported from."""
    wanted = request.GET.get("source", "")
    if wanted:
        found = next((s for s in sources if str(s.pk) == wanted), None)
        if found is None:
            raise Http404("No such import source here.")
        return found
    latest = (
        ImportBatch.objects.filter(source__in=sources, dry_run=False)
        .order_by("-created_at")
        .values_list("source_id", flat=True)
        .first()
    )
    return next((s for s in sources if s.pk == latest), sources[0] if sources else None)


def _days(request: HttpRequest) -> int:
    raw = request.GET.get("days", "")
    return min(int(raw), MAX_DAYS) if raw.isdigit() else reconciliation.DEFAULT_DAYS


@require_safe
@never_cache
@login_required
def reconciliation_report(request: HttpRequest) -> HttpResponse:
    locations = list(reconciliation.report_locations(user=request.user))
    if not locations:
        raise Http404("You do not read reports at any location.")
    location = _get_location_for_user(request, locations)
    sources = list(
        reconciliation.report_sources(
            locations=reconciliation.report_locations(user=request.user).filter(pk=location.pk)
        )
    )
    source = _get_source(request, sources)
    days = _days(request)
    today = dt.datetime.now(tz=location.tz).date()
    horizon = today + dt.timedelta(days=days)
    context: dict = {
        "locations": locations,
        "location": location,
        "sources": sources,
        "source": source,
        "days": days,
        "horizon": horizon,
        "lists": reconciliation.LISTS,
        "far_apart_days": reconciliation.FAR_APART.days,
    }
    if source is None:
        return render(request, "imports/reconciliation.html", context)
    result = reconciliation.reconcile(
        user=request.user,
        source=source,
        location=location,
        horizon=horizon,
    )
    show = request.GET.get("show", "")
    show = show if show in reconciliation.LISTS else "both"
    rows = {"both": result.both, "sheet": result.only_sheet, "crm": result.only_crm}[show]
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    if show == "both":
        for kept in page.object_list:
            kept.difference = reconciliation.difference_days(kept)
            kept.far_apart = abs(kept.difference) > reconciliation.FAR_APART.days
    last_import = (
        ImportBatch.objects.filter(source=source, dry_run=False, status=ImportBatch.Status.DONE)
        .order_by("-created_at")
        .first()
    )
    context |= {
        "result": result,
        "counts": result.counts(),
        "show": show,
        "page": page,
        "last_import": last_import,
    }
    return render(request, "imports/reconciliation.html", context)
