"""The recall dashboard, the lists behind its numbers, and the pilot report (issue #6).

Access: VIEW_REPORTS at a location (practice managers and admins). Front desk and
care staff get a 404 like any page their role does not have: the numbers add up
whole locations' work and patients, which is a manager's view. Locations come from
reports.selectors only; another location's id in the query string is a 404.
"""

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from locations.models import Location
from practicecrm import exports
from reports import charts, metrics, pilot
from reports.forms import PERIODS, PeriodForm, PilotForm
from reports.selectors import pick_locations, report_locations
from reports.sql import analytic_reads


def _ints(values: list[str]) -> list[int]:
    return [int(v) for v in values if v.isdigit()]


def _allowed(request: HttpRequest) -> list[Location]:
    allowed = list(report_locations(request.user))
    if not allowed:
        raise Http404("No reports for you here.")
    return allowed


def _scope(request: HttpRequest) -> tuple[PeriodForm, list[Location], Location | None, Any]:
    """The period form, the allowed locations, the chosen one, and the Scope (or None)."""
    allowed = _allowed(request)
    chosen_ids = _ints(request.GET.getlist("location"))[:1]
    locations = pick_locations(allowed, chosen_ids)
    location = locations[0] if chosen_ids else None
    form = PeriodForm(request.GET or {"period": "4w"}, today=timezone.localdate())
    scope = None
    if form.is_valid():
        data = form.cleaned_data
        scope = metrics.Scope(tuple(locations), data["start"], data["end"])
    return form, allowed, location, scope


def _period_query(form: PeriodForm, location: Location | None) -> dict[str, str]:
    data = form.cleaned_data
    query = {"period": data["period"]}
    if data["period"] == "custom":
        query.update(start=data["start"].isoformat(), end=data["end"].isoformat())
    if location is not None:
        query["location"] = str(location.pk)
    return query


@login_required
@require_safe
def dashboard(request: HttpRequest) -> HttpResponse:
    form, allowed, location, scope = _scope(request)
    context: dict[str, Any] = {
        "form": form,
        "locations": allowed,
        "location": location,
        "periods": PERIODS,
        "attribution_days": settings.REPORTS_ATTRIBUTION_DAYS,
    }
    if scope is None:
        return render(request, "reports/dashboard.html", context)
    query = _period_query(form, location)
    with analytic_reads():
        weeks = metrics.trend_weeks(scope)
        tallies = metrics.dashboard_tallies(scope, weeks)
        recall = metrics.recall_tables(scope, tallies)
        reminder_lines, reminder_total = metrics.reminders_by_location(scope, tallies)
        trend = metrics.weekly_trends(scope, weeks, tallies)
        by_staff = metrics.staff_conversion(scope, tallies)
        reasons = metrics.suppressed_reasons(scope)
    labels = [f"{p.monday:%b %-d}" for p in trend]
    context.update(
        scope=scope,
        query=query,
        recall_lines=recall.by_location,
        recall_total=recall.total,
        by_type=recall.by_type,
        by_staff=by_staff,
        reminder_lines=reminder_lines,
        reminder_total=reminder_total,
        reasons=reasons,
        trend=trend,
        recall_chart=charts.bar_chart(
            chart_id="recall-chart",
            title="Recall outreach and bookings per week",
            desc="Bars per week, Monday to Sunday on each location's calendar: staff "
            "contact attempts logged, recall messages that went out, and follow-ups "
            "booked from recall. The table beside the chart lists the same numbers.",
            labels=labels,
            series=[
                charts.Series("Attempts", [p.values["attempts"] for p in trend], "series-1"),
                charts.Series(
                    "Recall messages", [p.values["recall_messages"] for p in trend], "series-2"
                ),
                charts.Series(
                    "Booked from recall", [p.values["booked"] for p in trend], "series-3"
                ),
            ],
        ),
        reminder_chart=charts.bar_chart(
            chart_id="reminder-chart",
            title="Reminders per week",
            desc="Bars per week: appointment reminders and recall messages that went out, "
            "those delivered, and those that failed or were undelivered. The table beside "
            "the chart lists the same numbers.",
            labels=labels,
            series=[
                charts.Series("Sent", [p.values["sent"] for p in trend], "series-1"),
                charts.Series("Delivered", [p.values["delivered"] for p in trend], "series-3"),
                charts.Series("Failed", [p.values["failed"] for p in trend], "series-4"),
            ],
        ),
    )
    return render(request, "reports/dashboard.html", context)


_DRILL_PAGE = 25


@login_required
@require_safe
def drilldown(request: HttpRequest) -> HttpResponse:
    """The patients behind one number of the dashboard, same filter, same access."""
    form, allowed, location, scope = _scope(request)
    metric = request.GET.get("metric") or "due"
    drill = metrics.DRILLS.get(metric)
    if drill is None:
        raise Http404("No such number.")
    context: dict[str, Any] = {
        "form": form,
        "locations": allowed,
        "location": location,
        "metric": metric,
        "drill": drill,
        "periods": PERIODS,
    }
    if scope is None:
        return render(request, "reports/drilldown.html", context)
    followup_type = _ints([request.GET.get("type", "")])
    staff = _ints([request.GET.get("staff", "")])
    reason = request.GET.get("reason")
    rows = metrics.drill_rows(
        scope,
        metric,
        followup_type=followup_type[0] if followup_type else None,
        staff=staff[0] if staff else None,
        reason=reason if reason is not None else None,
    )
    related = {
        "followup": ("patient", "location", "followup_type", "scheduled_appointment"),
        "message": ("patient", "location", "appointment"),
        "appointment": ("patient", "location", "appointment_type"),
        "reply": ("location",),
    }[drill.table]
    rows = rows.select_related(*related)
    if drill.table == "reply":
        rows = rows.prefetch_related("patients").order_by("-received_at", "-pk")
    elif drill.table == "followup":
        rows = rows.order_by("due_date", "pk")
    elif drill.table == "appointment":
        rows = rows.order_by("start", "pk")
    else:
        rows = rows.order_by("-scheduled_for", "-pk")
    page = Paginator(rows, _DRILL_PAGE).get_page(request.GET.get("page"))
    context.update(
        scope=scope,
        page=page,
        query=_period_query(form, location),
        back=urlencode(_period_query(form, location)),
        subject=_drill_subject(request, metric),
    )
    return render(request, "reports/drilldown.html", context)


def _drill_subject(request: HttpRequest, metric: str) -> str:
    """What narrows the list beyond the period: a type, a staff member, a reason."""
    if reason := request.GET.get("reason"):
        return f"Reason: {reason}"
    if request.GET.get("type", "").isdigit():
        from followups.models import FollowupType

        found = FollowupType.objects.filter(pk=int(request.GET["type"])).first()
        return f"Follow-up type: {found}" if found else ""
    if metric.startswith("staff_") and request.GET.get("staff", "").isdigit():
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(pk=int(request.GET["staff"])).first()
        return f"Staff member: {user.get_full_name() or user.username}" if user else ""
    return ""


# --- pilot report -------------------------------------------------------------------------


def _pilot(request: HttpRequest) -> tuple[dict[str, Any], pilot.PilotReport | None]:
    allowed = _allowed(request)
    live = [loc for loc in allowed if loc.go_live_date]
    chosen = pick_locations(allowed, _ints(request.GET.getlist("location")))
    if not request.GET.getlist("location"):
        chosen = live[:1]
    data = request.GET.copy()
    data.setdefault("weeks", "8")
    form = PilotForm(data)
    weeks = (form.cleaned_data.get("weeks") or 8) if form.is_valid() else 8
    missing = [loc for loc in chosen if not loc.go_live_date]
    context: dict[str, Any] = {
        "form": form,
        "live": live,
        "chosen": chosen,
        "missing": missing,
        "weeks": weeks,
        "columns": pilot.COLUMNS,
    }
    report = None
    if chosen and not missing and form.is_valid():
        report = pilot.pilot_report(chosen, before=weeks, after=weeks)
    context["report"] = report
    context["export_query"] = urlencode(
        [("location", loc.pk) for loc in chosen] + [("weeks", weeks)]
    )
    return context, report


@login_required
@require_safe
def pilot_report(request: HttpRequest) -> HttpResponse:
    context, _ = _pilot(request)
    return render(request, "reports/pilot.html", context)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "no_show_rate":
        return f"{value * 100:.1f}%"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


@login_required
@require_safe
def pilot_export(request: HttpRequest) -> HttpResponseBase:
    context, report = _pilot(request)
    if report is None:
        raise Http404("Choose locations with a go-live date.")
    fmt = exports.export_format(request)
    if fmt is None:
        return exports.bad_format()
    header = ["Week", "From", "To", "Days", *(label for _, label in pilot.COLUMNS)]
    rows: list[list[Any]] = []
    for week in report.weeks:
        end = week.start + dt.timedelta(days=week.days_elapsed - 1) if week.start else None
        rows.append(
            [
                week.label,
                week.start.isoformat() if week.start else "",
                end.isoformat() if end else "",
                week.days_elapsed,
                *(_cell(key, week.values[key]) for key, _ in pilot.COLUMNS),
            ]
        )
    for side, summary in (
        ("Average per week before", report.before),
        ("Average per week after", report.after),
    ):
        rows.append([side, "", "", "", *(_cell(key, summary.get(key)) for key, _ in pilot.COLUMNS)])
    names = ", ".join(loc.name for loc in report.locations)
    return exports.export_response(
        request,
        fmt=fmt,
        name=f"pilot-report-{names}",
        title="Pilot report",
        view="reports:pilot_export",
        model=Location,
        filters={"locations": [loc.pk for loc in report.locations], "weeks": context["weeks"]},
        count=len(rows),
        header=header,
        rows=rows,
    )
