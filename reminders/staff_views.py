"""The location "Messages" page: today's queue, failures needing attention, replies.

Access: reading needs VIEW_PATIENTS at the message's location; "Mark handled" and
"Mark read" need CHANGE_PATIENTS there. Another location's message or reply is a
404, through reminders.selectors.message_get / reply_get.
"""

import datetime as dt
from collections.abc import Iterator
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST, require_safe

from locations.access import CHANGE_PATIENTS
from locations.models import Location
from patients.selectors import location_ids_for, user_locations
from practicecrm import exports
from practicecrm.http import HtmxHttpRequest
from practicecrm.pagination import CountedPaginator
from reminders import selectors, staff_services
from reminders.models import InboundMessage, OutboundMessage

# The same key as Today's picker: a location chosen on one page holds on the other.
_SESSION_LOCATION = "worklist_location"


def _pick_location(request: HttpRequest, locations: list[Location]) -> Location | None:
    if "location" in request.GET:
        request.session[_SESSION_LOCATION] = request.GET["location"]
    chosen = request.session.get(_SESSION_LOCATION, "")
    return next((loc for loc in locations if str(loc.pk) == chosen), None)


def _tab(request: HttpRequest) -> str:
    tab = request.GET.get("tab", "")
    return tab if tab in selectors.TABS else "queue"


@require_safe
@never_cache
@login_required
def message_list(request: HtmxHttpRequest) -> HttpResponse:
    locations = user_locations(user=request.user)
    if not locations:
        return render(request, "no_access.html")
    location = _pick_location(request, locations)
    tab = _tab(request)
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
        paginator = Paginator(rows, 25)
    else:
        rows = selectors.outbox_tab(outbox, tab=tab, locations=here, now=now)
        # The tab's rows are what its count in the header counted: no second COUNT(*).
        paginator = CountedPaginator(rows, 25, count=counts[tab])
    page = paginator.get_page(request.GET.get("page"))
    context = {
        "page": page,
        "tab": tab,
        "tabs": selectors.TABS,
        "counts": counts,
        "filter": filterset,
        "filtered": any(request.GET.get(name) for name in filterset.filters),
        "locations": locations,
        "location": location,
        "actionable": set(location_ids_for(user=request.user, perm=CHANGE_PATIENTS)),
    }
    return render(request, "reminders/message_list.html", context)


_OUTBOX_HEADER = (
    "When",
    "Sent or scheduled",
    "Location",
    "Last name",
    "First name",
    "Household recipient",
    "Kind",
    "Channel",
    "To",
    "Status",
    "Note",
    "Handled",
)
_REPLIES_HEADER = ("Received", "Location", "From", "Patients", "Message", "Note", "Read")


def _local(when: dt.datetime | None, location: Location | None) -> str:
    """A time as the page shows it: in the location's zone (the practice's without one)."""
    if when is None:
        return ""
    local = when.astimezone(location.tz) if location else timezone.localtime(when)
    return f"{local:%Y-%m-%d %H:%M %Z}"


def _outbox_rows(rows: QuerySet[OutboundMessage]) -> Iterator[tuple]:
    # The message text stays out (minimum necessary): the page opens it on demand.
    for m in rows.iterator(chunk_size=exports.CHUNK_SIZE):
        household = m.recipient if m.recipient_id and m.recipient_id != m.patient_id else None
        hidden = household is not None and not getattr(m, "recipient_visible", False)
        yield (
            _local(selectors.message_when(m), m.location),
            "sent" if m.sent_at else "scheduled",
            m.location.name,
            m.patient.last_name,
            m.patient.first_name,
            ("household contact" if hidden else household.first_name) if household else "",
            m.get_kind_display(),
            m.get_channel_display(),
            "" if hidden else m.to,
            m.get_status_display(),
            selectors.status_note(m),
            _local(m.handled_at, m.location),
        )


def _reply_rows(rows: QuerySet[InboundMessage]) -> Iterator[tuple]:
    for r in rows.iterator(chunk_size=exports.CHUNK_SIZE):
        yield (
            _local(r.received_at, r.location),
            r.location.name if r.location else "",
            r.from_number,
            # Only the patients the user may see, as on the page.
            "; ".join(f"{p.last_name}, {p.first_name}" for p in r.visible_patients),  # type: ignore[attr-defined]
            r.body,
            r.note,
            "Read" if r.read_at else "Unread",
        )


@require_safe
@never_cache
@login_required
def message_export(request: HttpRequest) -> HttpResponseBase:
    """The Messages page as CSV or XLSX: the same tab, location and filters, all pages."""
    locations = user_locations(user=request.user)
    if not locations:
        return render(request, "no_access.html")
    fmt = exports.export_format(request)
    if fmt is None:
        return exports.bad_format()
    location = _pick_location(request, locations)
    tab = _tab(request)
    filters: dict[str, Any] = {"tab": tab, "location": location.name if location else ""}
    if tab == "replies":
        replies = selectors.reply_list(
            user=request.user, qs=selectors.replies_base(user=request.user, location=location)
        )
        return exports.export_response(
            request,
            fmt=fmt,
            name="replies",
            title="the patients' replies",
            view="reminders:messages",
            model=InboundMessage,
            filters=filters,
            count=replies.count(),
            header=_REPLIES_HEADER,
            rows=_reply_rows(replies),
        )
    outbox, filterset = selectors.outbox_base(
        user=request.user, locations=locations, location=location, data=request.GET
    )
    here = [location] if location else locations
    rows = selectors.outbox_tab(outbox, tab=tab, locations=here, now=timezone.now())
    # The filters the page applied, as it read them (a bad date is ignored there too).
    applied = filterset.form.cleaned_data if filterset.form.is_valid() else {}
    filters |= {name: str(value) for name, value in applied.items() if value not in (None, "")}
    return exports.export_response(
        request,
        fmt=fmt,
        name=f"outbox-{tab}",
        title="the outbox",
        view="reminders:messages",
        model=OutboundMessage,
        filters=filters,
        count=rows.count(),
        header=_OUTBOX_HEADER,
        rows=_outbox_rows(rows),
    )


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
