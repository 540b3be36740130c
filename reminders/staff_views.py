"""The location "Messages" page: today's queue, failures needing attention, replies.

Access: reading needs VIEW_PATIENTS at the message's location; "Mark handled" and
"Mark read" need CHANGE_PATIENTS there. Another location's message or reply is a
404, through reminders.selectors.message_get / reply_get.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST, require_safe

from locations.access import CHANGE_PATIENTS, locations_for
from locations.models import Location
from patients.selectors import user_locations
from practicecrm.http import HtmxHttpRequest
from reminders import selectors, staff_services

# The same key as Today's picker: a location chosen on one page holds on the other.
_SESSION_LOCATION = "worklist_location"


def _pick_location(request: HttpRequest, locations: list[Location]) -> Location | None:
    if "location" in request.GET:
        request.session[_SESSION_LOCATION] = request.GET["location"]
    chosen = request.session.get(_SESSION_LOCATION, "")
    return next((loc for loc in locations if str(loc.pk) == chosen), None)


@require_safe
@never_cache
@login_required
def message_list(request: HtmxHttpRequest) -> HttpResponse:
    locations = user_locations(user=request.user)
    if not locations:
        return render(request, "no_access.html")
    location = _pick_location(request, locations)
    tab = request.GET.get("tab", "")
    if tab not in selectors.TABS:
        tab = "queue"
    now = timezone.now()
    # Tabs count within the location, and within the filters that apply to them.
    outbox, filterset = selectors.outbox_base(
        user=request.user, locations=locations, location=location, data=request.GET
    )
    here = [location] if location else locations
    counts = selectors.outbox_counts(outbox, locations=here, now=now)
    replies = selectors.replies_base(user=request.user, location=location)
    counts["replies"] = replies.filter(read_at__isnull=True).count()
    rows: QuerySet
    if tab == "replies":
        rows = selectors.reply_list(user=request.user, qs=replies)
    else:
        rows = selectors.outbox_tab(outbox, tab=tab, locations=here, now=now)
    page = Paginator(rows, 25).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "tab": tab,
        "tabs": selectors.TABS,
        "counts": counts,
        "filter": filterset,
        "filtered": any(request.GET.get(name) for name in filterset.filters),
        "locations": locations,
        "location": location,
        "actionable": set(
            locations_for(request.user, CHANGE_PATIENTS).values_list("pk", flat=True)
        ),
    }
    return render(request, "reminders/message_list.html", context)


def _back(request: HttpRequest) -> HttpResponse:
    """Back where the click came from: a safe `next`, else the Messages page."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return redirect(target)
    return redirect("reminders:messages")


@require_POST
@login_required
def message_handled(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    message = selectors.message_get(user=request.user, pk=pk)
    staff_services.message_mark_handled(message=message)
    if request.htmx:
        context = {
            "m": message,
            "actionable": {message.location_id},
            "tab": "attention",
            "updated": True,
        }
        return render(request, "reminders/_message_row.html", context)
    messages.success(request, "Marked handled: it no longer needs attention.")
    return _back(request)


@require_POST
@login_required
def reply_read(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    reply = selectors.reply_get(user=request.user, pk=pk)
    staff_services.reply_mark_read(reply=reply)
    if request.htmx:
        reply = selectors.reply_list(user=request.user, qs=type(reply).objects.filter(pk=pk))[0]
        return render(
            request,
            "reminders/_reply_row.html",
            {"r": reply, "actionable": {reply.location_id}, "updated": True},
        )
    messages.success(request, "Reply marked read.")
    return _back(request)
