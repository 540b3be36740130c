"""The recall dashboard's numbers, each defined once and counted in SQL (issue #6).

Every metric is a filter (a Q object) on one base table — follow-ups, outbox
messages, appointments or inbound replies — for a `Scope` (locations × period).
The dashboard counts rows matching it with `Count(filter=…)`, grouped by location
(or type, or staff member) in one query per table; the drill-down list applies the
very same filter, so a number and the list behind it cannot disagree.

Definitions, in words, are in docs/reports.md. Two rules run through them:

- A follow-up's due date is a date. Timestamps (attempts, messages, bookings,
  replies, visits) count on the calendar of the location they belong to
  (reports.sql.LocalDate).
- **Booked from recall**: the follow-up is scheduled or done on a visit that was
  recorded within `REPORTS_ATTRIBUTION_DAYS` (14) days after a staff contact
  attempt or a recall message that went out (sent, delivered or undelivered) about
  it. "Recorded" is the visit's `created_at`: when staff entered it or an import
  brought it in.
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import (
    BooleanField,
    Count,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from followups.models import ContactAttempt, Followup, FollowupType
from locations.models import Location
from patients.models import Appointment
from reminders import tallies as outbox_tallies
from reminders.models import InboundMessage, OutboundMessage
from reports import onepass, visits
from reports.sql import DaysBetween, LocalDate, week_index

Status = Followup.Status
OPEN_STATUSES = (Status.OPEN, Status.CONTACTED)
BOOKED_STATUSES = (Status.SCHEDULED, Status.DONE)
# A message "went out" when the provider took it; undelivered ones went out too.
WENT_OUT = (
    OutboundMessage.Status.SENT,
    OutboundMessage.Status.DELIVERED,
    OutboundMessage.Status.UNDELIVERED,
)
REMINDER_KINDS = (OutboundMessage.Kind.APPOINTMENT_REMINDER, OutboundMessage.Kind.RECALL)
ATTENDED = (Appointment.Status.COMPLETED, Appointment.Status.NO_SHOW)


@dataclass(frozen=True)
class Scope:
    """Which locations, which days (inclusive, each location's own calendar), as of when."""

    locations: tuple[Location, ...]
    start: dt.date
    end: dt.date
    now: dt.datetime = field(default_factory=timezone.now)

    @property
    def location_ids(self) -> list[int]:
        return [loc.pk for loc in self.locations]

    @property
    def attribution(self) -> dt.timedelta:
        return dt.timedelta(days=settings.REPORTS_ATTRIBUTION_DAYS)

    def utc_window(self) -> tuple[dt.datetime, dt.datetime]:
        """A UTC range surely containing the period in every zone (index-friendly prefilter)."""
        start = dt.datetime.combine(self.start, dt.time.min, tzinfo=dt.UTC)
        end = dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
        return start - dt.timedelta(days=1), end + dt.timedelta(days=1)

    def today_groups(self) -> dict[dt.date, list[int]]:
        """Location ids by their local 'today' (at most two dates, around midnight)."""
        groups: dict[dt.date, list[int]] = defaultdict(list)
        for loc in self.locations:
            groups[self.now.astimezone(loc.tz).date()].append(loc.pk)
        return groups


def _in_period(expr: Any, scope: Scope) -> Q:
    return Q(**{f"{expr}__gte": scope.start, f"{expr}__lte": scope.end})


# --- follow-ups ---------------------------------------------------------------------


def _contacts(scope: Scope, *, in_period: bool = False, before_booking: bool = False) -> Q:
    """Follow-ups with an attempt or a recall message that went out, as `pk IN (…)`.

    Each side is one uncorrelated subquery, which PostgreSQL runs once and hashes,
    instead of a subquery per follow-up: the difference between 4 s and 0.2 s at
    100,000 patients. `in_period`: the contact was on a day of the period (on its
    location's calendar). `before_booking`: it was within the attribution window
    before the follow-up's booking.
    """
    since, until = scope.utc_window()
    if before_booking:
        since -= scope.attribution
    attempts = ContactAttempt.objects.filter(
        followup__location_id__in=scope.location_ids,
        attempted_at__gte=since,
        attempted_at__lt=until,
    )
    messages = OutboundMessage.objects.filter(
        location_id__in=scope.location_ids,
        kind=OutboundMessage.Kind.RECALL,
        status__in=WENT_OUT,
        sent_at__gte=since,
        sent_at__lt=until,
        followup__isnull=False,
    )
    if in_period:
        attempts = attempts.alias(
            day=LocalDate(F("attempted_at"), F("followup__location__time_zone"))
        ).filter(_in_period("day", scope))
        messages = messages.alias(day=LocalDate(F("sent_at"), F("location__time_zone"))).filter(
            _in_period("day", scope)
        )
    if before_booking:
        booked = "followup__scheduled_appointment__created_at"
        attempts = attempts.filter(
            attempted_at__lte=F(booked), attempted_at__gte=F(booked) - Value(scope.attribution)
        )
        messages = messages.filter(
            sent_at__lte=F(booked), sent_at__gte=F(booked) - Value(scope.attribution)
        )
    return Q(pk__in=attempts.values("followup_id")) | Q(pk__in=messages.values("followup_id"))


def _attempts(*, followup_ref: str = "pk") -> QuerySet[ContactAttempt]:
    return ContactAttempt.objects.filter(followup_id=OuterRef(followup_ref))


def _attempt_in_period(scope: Scope) -> Exists:
    return Exists(
        _attempts()
        .alias(day=LocalDate(F("attempted_at"), F("followup__location__time_zone")))
        .filter(_in_period("day", scope))
    )


def followup_filters(scope: Scope) -> dict[str, Q]:
    """Each follow-up metric as a filter on Followup (see docs/reports.md)."""
    due = _in_period("due_date", scope)
    overdue, lapsed = Q(pk__in=[]), Q(pk__in=[])
    for today, ids in scope.today_groups().items():
        here = Q(location_id__in=ids)
        # Past due by the end of the period (or today), and still open today.
        overdue |= here & Q(
            status__in=OPEN_STATUSES,
            due_date__lte=scope.end,
            due_date__lt=today,
            lapses_on__gt=today,
        )
        # Lapsed on a day of the period: its lapse date passed without a booking.
        lapsed |= here & Q(
            status__in=(Status.LAPSED, *OPEN_STATUSES),
            lapses_on__gte=scope.start,
            lapses_on__lte=min(scope.end, today),
        )
    contacted = _contacts(scope, in_period=True)
    # booked_day is aliased by followup_rows(), the queryset these filters apply to.
    is_booked = Q(status__in=BOOKED_STATUSES, scheduled_appointment__isnull=False)
    attributed = _contacts(scope, before_booking=True)
    # Converted: contacted in the period and booked within the window after one of
    # the contacts of the period (the booking itself may fall after the period).
    converted = _contacts(
        Scope(scope.locations, scope.start, scope.end, scope.now),
        in_period=True,
        before_booking=True,
    )
    return {
        "due": due,
        "overdue": overdue,
        "lapsed": lapsed,
        "contacted": contacted,
        "booked": is_booked
        & Q(booked_day__gte=scope.start, booked_day__lte=scope.end)
        & attributed,
        "converted": is_booked & contacted & converted,
    }


def followup_rows(scope: Scope) -> QuerySet[Followup]:
    """The follow-ups any follow-up metric can count, with the booking day aliased.

    The prefilter — due or lapsing in the period, open and past due, or touched by
    a booking, attempt or message in a UTC window around it — is one `pk IN` over a
    UNION ALL of index range scans. Written as an OR on the follow-up row, it had
    PostgreSQL read every follow-up of the locations and hash every visit to test
    it (2.5 s of the dashboard's 10 s at 1×; the union takes a few milliseconds).
    """
    since, until = scope.utc_window()
    mine = Followup.objects.filter(location_id__in=scope.location_ids)
    candidates = (
        mine.filter(_in_period("due_date", scope)),
        mine.filter(status__in=OPEN_STATUSES, due_date__lte=scope.end),
        mine.filter(_in_period("lapses_on", scope)),
        mine.filter(
            scheduled_appointment__created_at__gte=since,
            scheduled_appointment__created_at__lt=until,
        ),
    )
    return _followups_among(
        scope, *(qs.order_by().values("pk") for qs in candidates), *_touched(since, until)
    )


def _touched(since: dt.datetime, until: dt.datetime) -> tuple[QuerySet, QuerySet]:
    """Ids of follow-ups with an attempt, or a recall message sent, in [since, until)."""
    attempts = ContactAttempt.objects.filter(attempted_at__gte=since, attempted_at__lt=until)
    messages = OutboundMessage.objects.filter(
        kind=OutboundMessage.Kind.RECALL,
        followup__isnull=False,
        sent_at__gte=since,
        sent_at__lt=until,
    )
    return attempts.order_by().values("followup_id"), messages.order_by().values("followup_id")


def _followups_among(scope: Scope, first: QuerySet, *more: QuerySet) -> QuerySet[Followup]:
    return Followup.objects.filter(
        location_id__in=scope.location_ids, pk__in=first.union(*more, all=True)
    ).alias(booked_day=LocalDate(F("scheduled_appointment__created_at"), F("location__time_zone")))


def booked_rows(scope: Scope) -> QuerySet[Followup]:
    """Follow-ups booked from recall on a day of the period.

    Booked from recall implies a contact at most the attribution window before the
    booking, so the candidates are only the follow-ups contacted since then: a
    far smaller set than followup_rows() for the weeks of the trend chart.
    """
    since, until = scope.utc_window()
    return _followups_among(scope, *_touched(since - scope.attribution, until)).filter(
        followup_filters(scope)["booked"]
    )


FOLLOWUP_METRICS = ("due", "overdue", "lapsed", "contacted", "booked", "converted")


def _followup_counts(scope: Scope) -> dict[tuple[int, int], dict[str, Any]]:
    """Every follow-up metric per (location, type), in one query.

    Locations and types are few (configuration, not patients), so adding the
    cells up by location and by type happens here, not in a second query.
    """
    if onepass.available():
        return onepass.followup_tally(scope, scope, scope.start).cells
    filters = followup_filters(scope)
    counts = {name: Count("pk", filter=filters[name]) for name in FOLLOWUP_METRICS}
    overdue_days = Greatest(DaysBetween(F("booked_day"), F("due_date")), Value(0))
    rows = (
        followup_rows(scope)
        .values("location_id", "followup_type_id")
        .annotate(**counts, overdue_days=Sum(overdue_days, filter=filters["booked"]))
        .order_by()
    )
    return {(row.pop("location_id"), row.pop("followup_type_id")): row for row in rows}


def _sum_by(cells: dict[tuple[int, int], dict[str, Any]], index: int) -> dict[Any, dict]:
    out: dict[Any, dict[str, Any]] = {}
    for key, row in cells.items():
        into = out.setdefault(key[index], dict.fromkeys(FOLLOWUP_METRICS, 0) | {"days": 0})
        for name in FOLLOWUP_METRICS:
            into[name] += row[name]
        into["days"] += row["overdue_days"] or 0
    for into in out.values():
        days = into.pop("days")
        into["avg_overdue"] = days / into["booked"] if into["booked"] else None
    return out


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class RecallLine:
    """One line of a recall table: a location, a follow-up type or a staff member."""

    key: Any
    label: str
    due: int = 0
    overdue: int = 0
    lapsed: int = 0
    contacted: int = 0
    booked: int = 0
    converted: int = 0
    avg_overdue: float | None = None

    @property
    def conversion(self) -> float | None:
        return _rate(self.converted, self.contacted)


def _lines(keys: Iterable[tuple[Any, str]], counts: dict[Any, dict[str, Any]]) -> list[RecallLine]:
    return [RecallLine(key=key, label=label, **counts.get(key, {})) for key, label in keys]


def _total(lines: list[RecallLine], counts: dict[Any, dict[str, Any]], label: str) -> RecallLine:
    total = RecallLine(key=None, label=label)
    weighted, booked = 0.0, 0
    for line in lines:
        for name in FOLLOWUP_METRICS:
            setattr(total, name, getattr(total, name) + getattr(line, name))
        if line.avg_overdue is not None:
            weighted += line.avg_overdue * line.booked
            booked += line.booked
    total.avg_overdue = weighted / booked if booked else None
    return total


@dataclass
class RecallTables:
    by_location: list[RecallLine]
    total: RecallLine
    by_type: list[RecallLine]


def recall_tables(scope: Scope, tallies: "Tallies | None" = None) -> RecallTables:
    """Recall by location, in total and by follow-up type (two queries).

    `tallies`: from dashboard_tallies(), when the caller has them.
    """
    if tallies is not None and tallies.followups is not None:
        cells = tallies.followups.cells
    else:
        cells = _followup_counts(scope)
    by_location = _sum_by(cells, 0)
    lines = _lines(((loc.pk, loc.name) for loc in scope.locations), by_location)
    by_type = _sum_by(cells, 1)
    types = FollowupType.objects.filter(pk__in=list(by_type)).order_by("name")
    return RecallTables(
        by_location=lines,
        total=_total(lines, by_location, "All these locations"),
        by_type=_lines(((t.pk, t.name) for t in types), by_type),
    )


def recall_by_location(scope: Scope) -> tuple[list[RecallLine], RecallLine]:
    tables = recall_tables(scope)
    return tables.by_location, tables.total


def recall_by_type(scope: Scope) -> list[RecallLine]:
    return recall_tables(scope).by_type


def staff_conversion(scope: Scope, tallies: "Tallies | None" = None) -> list[RecallLine]:
    """Per staff member: follow-ups they tried in the period, and those booked after.

    Messages have no author, so this is attempts only: a follow-up counts as
    converted for the colleague whose attempt in the period it was booked within
    the window after. `tallies`: from dashboard_tallies(), when the caller has them
    (on PostgreSQL they hold the counts, and only the names are read here).
    """
    if tallies is not None and tallies.followups is not None:
        counts = tallies.followups.staff
        # Ties in the database's username order, as the ORM query below sorts them.
        users = get_user_model().objects.filter(pk__in=list(counts)).order_by("username")
        staff = [
            RecallLine(
                key=user.pk,
                label=user.get_full_name().strip() or user.username,
                contacted=counts[user.pk][0],
                converted=counts[user.pk][1],
            )
            for user in users.only("first_name", "last_name", "username")
        ]
        return sorted(staff, key=lambda line: -line.contacted)
    since, until = scope.utc_window()
    rows = (
        ContactAttempt.objects.filter(
            followup__location_id__in=scope.location_ids,
            attempted_at__gte=since,
            attempted_at__lt=until,
        )
        .alias(day=LocalDate(F("attempted_at"), F("followup__location__time_zone")))
        .filter(_in_period("day", scope), staff__isnull=False)
        .values("staff_id", "staff__first_name", "staff__last_name", "staff__username")
        .annotate(
            contacted=Count("followup_id", distinct=True),
            converted=Count(
                "followup_id",
                distinct=True,
                filter=Q(
                    followup__status__in=BOOKED_STATUSES,
                    followup__scheduled_appointment__isnull=False,
                )
                & Q(**{"followup__scheduled_appointment__created_at__gte": F("attempted_at")})
                & Q(
                    **{
                        "followup__scheduled_appointment__created_at__lte": F("attempted_at")
                        + Value(scope.attribution)
                    }
                ),
            ),
        )
        .order_by("-contacted", "staff__username")
    )
    lines = []
    for row in rows:
        name = f"{row['staff__first_name']} {row['staff__last_name']}".strip()
        lines.append(
            RecallLine(
                key=row["staff_id"],
                label=name or row["staff__username"],
                contacted=row["contacted"],
                converted=row["converted"],
            )
        )
    return lines


def staff_filter(scope: Scope, staff_id: int, *, converted: bool) -> Q:
    """The drill-down of one staff line: follow-ups they tried (and booked after)."""
    attempts = ContactAttempt.objects.filter(followup_id=OuterRef("pk"), staff_id=staff_id).alias(
        day=LocalDate(F("attempted_at"), F("followup__location__time_zone"))
    )
    attempts = attempts.filter(_in_period("day", scope))
    if converted:
        attempts = attempts.filter(
            attempted_at__lte=OuterRef("scheduled_appointment__created_at"),
            attempted_at__gte=OuterRef("scheduled_appointment__created_at") - scope.attribution,
        )
        return Q(Exists(attempts), status__in=BOOKED_STATUSES, scheduled_appointment__isnull=False)
    return Q(Exists(attempts))


# --- reminders: the outbox, visits and replies -------------------------------------------


def message_rows(scope: Scope, *, spelled_out: bool = True) -> QuerySet[OutboundMessage]:
    """Reminders and recall messages of the locations, with the day they count on.

    A message counts on the day it went out, or — never sent — the day it was due.
    """
    since, until = scope.utc_window()
    moment = Coalesce(F("sent_at"), F("scheduled_for"), output_field=DateTimeField())
    # The moment's UTC range is implied by its local day being in the period; it
    # is spelled out so PostgreSQL ranges over outbox_location_moment_idx.
    rows = OutboundMessage.objects.alias(moment=moment).filter(
        location_id__in=scope.location_ids,
        moment__gte=since,
        moment__lt=until,
        kind__in=REMINDER_KINDS,
    )
    if spelled_out:
        # The same range once more, column by column (implied by the moment's):
        # it steers the planner to the covering index for the whole outbox.
        rows = rows.filter(
            Q(sent_at__gte=since) | Q(sent_at__isnull=True, scheduled_for__gte=since)
        )
    return rows.alias(day=LocalDate(F("moment"), F("location__time_zone"))).filter(
        _in_period("day", scope)
    )


def message_filters() -> dict[str, Q]:
    S = OutboundMessage.Status
    return {
        "sent": Q(status__in=WENT_OUT),
        "delivered": Q(status=S.DELIVERED),
        "failed": Q(status__in=(S.FAILED, S.UNDELIVERED)),
        "suppressed": Q(status=S.SUPPRESSED),
        "shadow": Q(status=S.SHADOW),
    }


MESSAGE_METRICS = ("sent", "delivered", "failed", "suppressed", "shadow")


TREND_MESSAGE_METRICS = ("sent", "delivered", "failed", "recall_messages")


@dataclass
class Tallies:
    """What the dashboard's tables and charts share, counted once (dashboard_tallies).

    The outbox's numbers for the period per location and for the chart's weeks
    (by week index); on PostgreSQL also the follow-up metrics and the chart's
    bookings and attempts per week (reports.onepass), else None.
    """

    messages_by_location: dict[int, dict[str, int]]
    messages_by_week: dict[int, dict[str, int]]
    followups: "onepass.FollowupTally | None" = None


def dashboard_tallies(scope: Scope, weeks: list[dt.date]) -> Tallies:
    tallies = message_tallies(scope, weeks)
    if onepass.available():
        tallies.followups = onepass.followup_tally(scope, _trend_scope(scope, weeks), weeks[0])
    return tallies


def message_tallies(scope: Scope, weeks: list[dt.date]) -> Tallies:
    """The reminder table's and the weekly charts' message numbers, in one statement.

    On PostgreSQL from the outbox's kept counts (reminders.tallies): a row per
    location, day, kind and status, so the cost follows locations × days, not
    messages. Elsewhere from the outbox's rows (_message_tallies_from_rows).
    """
    if not outbox_tallies.available():
        return _message_tallies_from_rows(scope, weeks)
    wide = _trend_scope(scope, weeks)
    S = OutboundMessage.Status
    went_out = [str(s) for s in WENT_OUT]
    params: dict[str, Any] = {
        "ids": scope.location_ids,
        "first": min(scope.start, wide.start),
        "last": max(scope.end, wide.end),
        "kinds": [str(k) for k in REMINDER_KINDS],
        "anchor": weeks[0],
        "p_start": scope.start,
        "p_end": scope.end,
        "w_start": wide.start,
        "w_end": wide.end,
        "went_out": went_out,
        "failed": [str(S.FAILED), str(S.UNDELIVERED)],
        "recall": str(OutboundMessage.Kind.RECALL),
    }
    # Each metric of message_filters() on the tally's columns, per span.
    status_of = {
        "sent": "status = ANY(%(went_out)s)",
        "delivered": f"status = '{S.DELIVERED}'",
        "failed": "status = ANY(%(failed)s)",
        "suppressed": f"status = '{S.SUPPRESSED}'",
        "shadow": f"status = '{S.SHADOW}'",
    }
    columns = [f"sum(n) FILTER (WHERE in_period AND {status_of[m]})" for m in MESSAGE_METRICS]
    columns += [
        f"sum(n) FILTER (WHERE in_trend AND {status_of[m]})"
        for m in ("sent", "delivered", "failed")
    ]
    columns.append(f"sum(n) FILTER (WHERE in_trend AND {status_of['sent']} AND kind = %(recall)s)")
    # The kept rows (a location-day has a dozen: kinds × statuses × reasons) are
    # first added up per location, week, span, kind and status, and the metrics
    # filter those few: each filter once a group, not once a row — and in integer
    # arithmetic, not numeric (27 → 15 ms for 20 locations' eight weeks).
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT location_id, week, {", ".join(columns)}
                  FROM (SELECT location_id, (day - %(anchor)s + 7000) / 7 - 1000 AS week,
                               day BETWEEN %(p_start)s AND %(p_end)s AS in_period,
                               day BETWEEN %(w_start)s AND %(w_end)s AS in_trend,
                               kind, status, sum(n)::integer AS n
                          FROM {outbox_tallies.TOTALS} counted
                         GROUP BY 1, 2, 3, 4, 5, 6) grouped
                 GROUP BY 1, 2""",
            params,
        )
        rows = cursor.fetchall()
    by_location: dict[int, dict[str, int]] = {}
    by_week: dict[int, dict[str, int]] = {}
    for location_id, week, *counts in rows:
        counts = [n or 0 for n in counts]
        here = by_location.setdefault(location_id, dict.fromkeys(MESSAGE_METRICS, 0))
        for name, n in zip(MESSAGE_METRICS, counts[: len(MESSAGE_METRICS)], strict=True):
            here[name] += n
        point = by_week.setdefault(week, dict.fromkeys(TREND_MESSAGE_METRICS, 0))
        for name, n in zip(TREND_MESSAGE_METRICS, counts[len(MESSAGE_METRICS) :], strict=True):
            point[name] += n
    return Tallies(by_location, by_week)


def _message_tallies_from_rows(scope: Scope, weeks: list[dt.date]) -> Tallies:
    """message_tallies() from the outbox's rows, in one scan.

    They were three queries over the same rows (the period's, and twice the weeks
    of the chart's). Here the rows of both spans are grouped by (location, week)
    once, each count filtered to its span, and the groups — locations × weeks, a
    few hundred — are added up here.
    """
    wide = _trend_scope(scope, weeks)
    hull = Scope(scope.locations, min(scope.start, wide.start), max(scope.end, wide.end), scope.now)
    flags = message_filters() | {"recall": Q(kind=OutboundMessage.Kind.RECALL)}
    metrics: dict[str, tuple[str, ...]] = {
        f"p_{name}": ("period", name) for name in MESSAGE_METRICS
    }
    metrics |= {f"w_{name}": ("trend", name) for name in ("sent", "delivered", "failed")}
    metrics["w_recall_messages"] = ("trend", "sent", "recall")
    rows = _flag_counts(
        message_rows(hull),
        {"location_id": "location_id", "week": week_index(F("day"), weeks[0])},
        flags,
        metrics,
        spans={"period": scope, "trend": wide},
    )
    by_location: dict[int, dict[str, int]] = {}
    by_week: dict[int, dict[str, int]] = {}
    for row in rows:
        here = by_location.setdefault(row["location_id"], dict.fromkeys(MESSAGE_METRICS, 0))
        for name in MESSAGE_METRICS:
            here[name] += row[f"p_{name}"]
        week = by_week.setdefault(row["week"], dict.fromkeys(TREND_MESSAGE_METRICS, 0))
        for name in TREND_MESSAGE_METRICS:
            week[name] += row[f"w_{name}"]
    return Tallies(by_location, by_week)


def suppressed_reasons(scope: Scope) -> list[dict[str, Any]]:
    """Messages held back, by reason, most frequent first (all the scope's locations)."""
    if outbox_tallies.available():
        params: dict[str, Any] = {
            "ids": scope.location_ids,
            "first": scope.start,
            "last": scope.end,
            "kinds": [str(k) for k in REMINDER_KINDS],
        }
        # The blank reason's row is the total: what the reasons do not account
        # for was held back without one, and is listed as such (a blank reason).
        with connection.cursor() as cursor:
            cursor.execute(
                f"""SELECT reason, total FROM (
                        SELECT reason, CASE WHEN reason = '' THEN sum(n) - coalesce(
                                   sum(sum(n)) FILTER (WHERE reason <> '') OVER (), 0)
                               ELSE sum(n) END::bigint AS total
                          FROM {outbox_tallies.SUPPRESSED} counted
                         GROUP BY reason) by_reason
                     WHERE total <> 0
                     ORDER BY total DESC, reason""",
                params,
            )
            return [{"reason": reason, "n": n} for reason, n in cursor.fetchall()]
    # Without the spelled-out OR, which only a bitmap scan (reading the table) can
    # serve: the moment's range alone is an index-only scan of
    # outbox_suppressed_reason_idx (reminders 0009).
    return list(
        message_rows(scope, spelled_out=False)
        .filter(status=OutboundMessage.Status.SUPPRESSED)
        .values("reason")
        .annotate(n=Count("*"))
        .order_by("-n", "reason")
    )


def appointment_rows(scope: Scope) -> QuerySet[Appointment]:
    since, until = scope.utc_window()
    return (
        Appointment.objects.filter(
            location_id__in=scope.location_ids, start__gte=since, start__lt=until
        )
        .alias(day=LocalDate(F("start"), F("location__time_zone")))
        .filter(_in_period("day", scope))
    )


def appointment_flags(scope: Scope) -> dict[str, Q]:
    """What the visit metrics combine: facts about one visit.

    Each check is a probe per visit of the period (outbox_reminded_idx, the
    replies' confirmed-visit index). With a plain `= OuterRef` PostgreSQL hashes
    the whole index once instead — every reminder the practice ever sent, 143,000
    at 1× and ten times that at 10×, for a period of 12,000 visits. The repeated
    correlation as `>=` (implied by the `=`) is not hashable, so the cost follows
    the period's visits, not the practice's history (41 vs 167 ms at 1×).

    These filters define the metrics and give the drill-down lists; on PostgreSQL
    the dashboard counts the same flags from rows kept per visit (reports.visits,
    its FLAGS), and tests/reports/test_onepass.py holds the two to each other.
    """
    reminded = Exists(
        OutboundMessage.objects.filter(
            appointment_id=OuterRef("pk"),
            appointment_id__gte=OuterRef("pk"),
            kind=OutboundMessage.Kind.APPOINTMENT_REMINDER,
            status__in=WENT_OUT,
        )
    )
    confirmed = Exists(
        InboundMessage.objects.filter(
            confirmed_appointment_id=OuterRef("pk"),
            confirmed_appointment_id__gte=OuterRef("pk"),
            action=InboundMessage.Action.CONFIRMED,
        )
    )
    return {
        "reminded": Q(reminded),
        "confirmed": Q(confirmed),
        # Only visits whose outcome is known: completed or no-show, and already begun.
        "outcome": Q(status__in=ATTENDED, start__lt=scope.now),
        "no_show": Q(status=Appointment.Status.NO_SHOW),
    }


# Each visit metric as the flags it requires ("!" = must not hold).
APPOINTMENT_METRICS: dict[str, tuple[str, ...]] = {
    "reminded": ("reminded",),
    "confirmed": ("reminded", "confirmed"),
    "reminded_outcome": ("reminded", "outcome"),
    "reminded_noshow": ("reminded", "outcome", "no_show"),
    "unreminded_outcome": ("!reminded", "outcome"),
    "unreminded_noshow": ("!reminded", "outcome", "no_show"),
}


def appointment_filters(scope: Scope) -> dict[str, Q]:
    flags = appointment_flags(scope)

    def flag(name: str) -> Q:
        return ~flags[name[1:]] if name.startswith("!") else flags[name]

    out = {}
    for metric, names in APPOINTMENT_METRICS.items():
        q = flag(names[0])
        for name in names[1:]:
            q &= flag(name)
        out[metric] = q
    return out


def _flag_counts(
    rows: QuerySet,
    keys: dict[str, Any],
    flags: dict[str, Q],
    metrics: Mapping[str, tuple[str, ...]],
    spans: dict[str, Scope] | None = None,
) -> list[dict[str, Any]]:
    """Per group of `keys`, how many rows hold each metric's flags.

    `Count(filter=…)` per metric repeats every flag in every metric that uses it:
    the visit table ran its reminder EXISTS six times a visit, and the outbox
    converted each timestamp to its local day twenty times. Here an inner query
    computes each flag (and the row's day) once, and the outer one adds up.

    A metric is the flags it requires ("!flag": must not hold), and may name a
    span of `spans`: the row's `day` (aliased by `rows`) falls in that scope's
    period. `keys`: output name → field name or expression to group by.
    """
    qn = connection.ops.quote_name
    columns: dict[str, Any] = {
        f"flag_{name}": ExpressionWrapper(q, output_field=BooleanField())
        for name, q in flags.items()
    }
    if spans:
        columns["flag_day"] = F("day")
    inner = rows.annotate(**columns).values(
        *(name for name, key in keys.items() if key == name),
        *columns,
        **{name: key for name, key in keys.items() if key != name},
    )
    sql, inner_params = inner.order_by().query.sql_with_params()
    if connection.vendor == "postgresql":
        # A fence: flattened into the outer query, the flags were inlined again.
        sql += " OFFSET 0"
    params: list[Any] = []

    def term(name: str) -> str:
        if spans and name in spans:
            params.extend((spans[name].start, spans[name].end))
            return f"{qn('flag_day')} BETWEEN %s AND %s"
        if name.startswith("!"):
            return f"NOT {qn('flag_' + name[1:])}"
        return qn("flag_" + name)

    counts = ", ".join(
        f"SUM(CASE WHEN {' AND '.join(map(term, names))} THEN 1 ELSE 0 END)"
        for names in metrics.values()
    )
    group = ", ".join(qn(name) for name in keys)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {group}, {counts} FROM ({sql}) flagged GROUP BY {group}",
            (*params, *inner_params),
        )
        names = [*keys, *metrics]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def appointments_by_location(scope: Scope) -> dict[int, dict[str, int]]:
    if visits.available():  # the kept rows: one index-only range (reports.visits)
        return visits.counts_by_location(
            scope,
            APPOINTMENT_METRICS,
            attended=[str(s) for s in ATTENDED],
            no_show=str(Appointment.Status.NO_SHOW),
        )
    rows = _flag_counts(
        appointment_rows(scope),
        {"location_id": "location_id"},
        appointment_flags(scope),
        APPOINTMENT_METRICS,
    )
    return {row.pop("location_id"): row for row in rows}


def reply_rows(scope: Scope) -> QuerySet[InboundMessage]:
    since, until = scope.utc_window()
    return (
        InboundMessage.objects.filter(
            location_id__in=scope.location_ids, received_at__gte=since, received_at__lt=until
        )
        .alias(day=LocalDate(F("received_at"), F("location__time_zone")))
        .filter(_in_period("day", scope))
    )


def reply_filters() -> dict[str, Q]:
    return {
        "opt_outs": Q(action=InboundMessage.Action.OPT_OUT),
        "unanswered": Q(action=InboundMessage.Action.INBOX, read_at__isnull=True),
    }


def replies_by_location(scope: Scope) -> dict[int, dict[str, int]]:
    filters = reply_filters()
    rows = (
        reply_rows(scope)
        .values("location_id")
        # Of a column never null that inbound_location_received_idx carries
        # (reminders 0013), not of the id: then the index alone answers.
        .annotate(**{name: Count("received_at", filter=q) for name, q in filters.items()})
        .order_by()
    )
    return {row.pop("location_id"): row for row in rows}


@dataclass
class ReminderLine:
    key: Any
    label: str
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    suppressed: int = 0
    shadow: int = 0
    reminded: int = 0
    confirmed: int = 0
    reminded_outcome: int = 0
    reminded_noshow: int = 0
    unreminded_outcome: int = 0
    unreminded_noshow: int = 0
    opt_outs: int = 0
    unanswered: int = 0

    @property
    def delivery_rate(self) -> float | None:
        return _rate(self.delivered, self.sent)

    @property
    def confirmation_rate(self) -> float | None:
        return _rate(self.confirmed, self.reminded)

    @property
    def reminded_noshow_rate(self) -> float | None:
        return _rate(self.reminded_noshow, self.reminded_outcome)

    @property
    def unreminded_noshow_rate(self) -> float | None:
        return _rate(self.unreminded_noshow, self.unreminded_outcome)


REMINDER_FIELDS = MESSAGE_METRICS + tuple(APPOINTMENT_METRICS) + ("opt_outs", "unanswered")


def reminders_by_location(
    scope: Scope, tallies: Tallies | None = None
) -> tuple[list[ReminderLine], ReminderLine]:
    """The reminder table; `tallies` from dashboard_tallies() when the caller has them."""
    if tallies is None:
        tallies = message_tallies(scope, trend_weeks(scope))
    messages = tallies.messages_by_location
    visits = appointments_by_location(scope)
    replies = replies_by_location(scope)
    lines = []
    for loc in scope.locations:
        values = {**messages.get(loc.pk, {}), **visits.get(loc.pk, {}), **replies.get(loc.pk, {})}
        lines.append(ReminderLine(key=loc.pk, label=loc.name, **values))
    total = ReminderLine(key=None, label="All these locations")
    for name in REMINDER_FIELDS:
        setattr(total, name, sum(getattr(line, name) for line in lines))
    return lines, total


# --- weekly trends ------------------------------------------------------------------


def trend_weeks(scope: Scope, *, minimum: int = 8, maximum: int = 27) -> list[dt.date]:
    """Mondays of the weeks to chart: the period's, widened to `minimum` weeks back."""
    last = scope.end - dt.timedelta(days=scope.end.weekday())
    first = scope.start - dt.timedelta(days=scope.start.weekday())
    first = min(first, last - dt.timedelta(weeks=minimum - 1))
    first = max(first, last - dt.timedelta(weeks=maximum - 1))
    return [first + dt.timedelta(weeks=i) for i in range((last - first).days // 7 + 1)]


@dataclass
class WeekPoint:
    monday: dt.date
    values: dict[str, int] = field(default_factory=dict)

    @property
    def sunday(self) -> dt.date:
        return self.monday + dt.timedelta(days=6)


def _trend_scope(scope: Scope, weeks: list[dt.date]) -> Scope:
    return Scope(scope.locations, weeks[0], weeks[-1] + dt.timedelta(days=6), scope.now)


def weekly_trends(
    scope: Scope, weeks: list[dt.date], tallies: Tallies | None = None
) -> list[WeekPoint]:
    """Per week: attempts logged, recall messages out, bookings from recall, reminders.

    Each series is grouped by the week index on each location's calendar, in
    dashboard_tallies() (`tallies`, when the caller has them) — or, for the
    follow-up series off PostgreSQL, here with the ORM filters.
    """
    anchor = weeks[0]
    wide = _trend_scope(scope, weeks)
    points = {i: WeekPoint(monday) for i, monday in enumerate(weeks)}
    if tallies is None:
        tallies = dashboard_tallies(scope, weeks)
    series: dict[str, dict[int, int]] = {}
    if tallies.followups is not None:
        series["attempts"] = tallies.followups.attempts_by_week
        series["booked"] = tallies.followups.booked_by_week
    else:
        since, until = wide.utc_window()
        attempts = (
            ContactAttempt.objects.filter(
                followup__location_id__in=wide.location_ids,
                attempted_at__gte=since,
                attempted_at__lt=until,
            )
            .alias(day=LocalDate(F("attempted_at"), F("followup__location__time_zone")))
            .filter(_in_period("day", wide))
            .values(week=week_index(F("day"), anchor))
            .annotate(n=Count("pk"))
            .order_by()
        )
        booked = (
            booked_rows(wide)
            .values(week=week_index(F("booked_day"), anchor))
            .annotate(n=Count("pk"))
            .order_by()
        )
        series["attempts"] = {row["week"]: row["n"] for row in attempts}
        series["booked"] = {row["week"]: row["n"] for row in booked}
    for name, by_week in series.items():
        for week, n in by_week.items():
            if week in points:
                points[week].values[name] = n
    for week, values in tallies.messages_by_week.items():
        if week in points:
            points[week].values.update(values)
    for point in points.values():
        for name in ("attempts", "recall_messages", "booked", "sent", "delivered", "failed"):
            point.values.setdefault(name, 0)
    return [points[i] for i in sorted(points)]


# --- the drill-down: the rows behind a number -----------------------------------------


@dataclass(frozen=True)
class Drill:
    """What a number on the dashboard counts, as a list of rows."""

    label: str
    table: str  # followup, message, appointment, reply, attempt


DRILLS: dict[str, Drill] = {
    "due": Drill("Follow-ups due", "followup"),
    "overdue": Drill("Follow-ups past due and still open", "followup"),
    "lapsed": Drill("Follow-ups that lapsed in the period", "followup"),
    "contacted": Drill("Follow-ups contacted", "followup"),
    "booked": Drill("Booked from recall", "followup"),
    "converted": Drill("Contacted and booked from recall", "followup"),
    "staff_contacted": Drill("Follow-ups tried by a staff member", "followup"),
    "staff_converted": Drill("Booked after a staff member's attempt", "followup"),
    "sent": Drill("Messages that went out", "message"),
    "delivered": Drill("Messages delivered", "message"),
    "failed": Drill("Messages failed or undelivered", "message"),
    "suppressed": Drill("Messages not sent", "message"),
    "shadow": Drill("Messages recorded in shadow mode", "message"),
    "recall_messages": Drill("Recall messages that went out", "message"),
    "attempts": Drill("Follow-ups with contact attempts logged", "followup"),
    "reminded": Drill("Visits with a reminder sent", "appointment"),
    "confirmed": Drill("Reminded visits confirmed by reply", "appointment"),
    "reminded_noshow": Drill("No-shows after a reminder", "appointment"),
    "reminded_outcome": Drill("Reminded visits, completed or no-show", "appointment"),
    "unreminded_noshow": Drill("No-shows without a reminder", "appointment"),
    "unreminded_outcome": Drill("Visits without a reminder, completed or no-show", "appointment"),
    "opt_outs": Drill("Opt-outs (STOP)", "reply"),
    "unanswered": Drill("Replies still unread", "reply"),
}


def drill_rows(
    scope: Scope,
    metric: str,
    *,
    followup_type: int | None = None,
    staff: int | None = None,
    reason: str | None = None,
) -> QuerySet:
    """The rows counted by `metric` for `scope` — the same filter as the number."""
    if metric in FOLLOWUP_METRICS:
        qs: QuerySet = followup_rows(scope).filter(followup_filters(scope)[metric])
        if followup_type is not None:
            qs = qs.filter(followup_type_id=followup_type)
        return qs
    if metric in ("staff_contacted", "staff_converted") and staff is not None:
        return followup_rows(scope).filter(
            staff_filter(scope, staff, converted=metric == "staff_converted")
        )
    if metric == "attempts":
        return followup_rows(scope).filter(_attempt_in_period(scope))
    if metric == "recall_messages":
        return message_rows(scope).filter(kind=OutboundMessage.Kind.RECALL, status__in=WENT_OUT)
    if metric in MESSAGE_METRICS:
        qs = message_rows(scope).filter(message_filters()[metric])
        if metric == "suppressed" and reason is not None:
            qs = qs.filter(reason=reason)
        return qs
    if metric in APPOINTMENT_METRICS:
        return appointment_rows(scope).filter(appointment_filters(scope)[metric])
    if metric in ("opt_outs", "unanswered"):
        return reply_rows(scope).filter(reply_filters()[metric])
    raise KeyError(metric)


def uses_native_median() -> bool:
    return connection.vendor == "postgresql"
