"""The pilot report: the weeks before a location's go-live against the weeks after.

Weeks are counted from each location's own go-live date (week 1 starts on it,
week -1 is the seven days before), on that location's calendar, so a group of
locations that went live on different days lines up by week of the pilot. Each
column is one SQL query grouped by that week number; see docs/reports.md.
"""

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from axes.models import AccessLog
from django.db import connection
from django.db.models import Case, Count, F, Q, QuerySet, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from followups.models import ContactAttempt, Followup
from locations.models import Location, LocationGrant
from patients.models import Appointment
from reminders.models import InboundMessage, OutboundMessage
from reports.metrics import ATTENDED, REMINDER_KINDS, WENT_OUT
from reports.sql import DaysBetween, LocalDate, Median, week_index

COLUMNS: tuple[tuple[str, str], ...] = (
    ("completed", "Follow-ups completed"),
    ("median_overdue", "Median days overdue at completion"),
    ("reminders", "Reminders sent"),
    ("confirmations", "Confirmations"),
    ("no_shows", "No-shows"),
    ("no_show_rate", "No-show rate"),
    ("attempts", "Staff attempts logged"),
    ("active_users", "Active users per day"),
)


@dataclass
class PilotWeek:
    number: int  # -3, -2, -1 before go-live; 0, 1, 2… after (shown as week 1, 2, 3…)
    days_elapsed: int = 7
    start: dt.date | None = None  # only when every location shares its go-live date
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"Week {self.number}" if self.number < 0 else f"Week +{self.number + 1}"

    @property
    def before(self) -> bool:
        return self.number < 0

    @property
    def partial(self) -> bool:
        return self.days_elapsed < 7


@dataclass
class PilotReport:
    locations: list[Location]
    weeks: list[PilotWeek]
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def shared_go_live(self) -> dt.date | None:
        dates = {loc.go_live_date for loc in self.locations}
        return dates.pop() if len(dates) == 1 else None


def _window(locations: list[Location], before: int, after: int) -> tuple[dt.datetime, dt.datetime]:
    dates = [loc.go_live_date for loc in locations if loc.go_live_date]
    start = dt.datetime.combine(min(dates), dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(max(dates), dt.time.min, tzinfo=dt.UTC)
    return start - dt.timedelta(weeks=before, days=1), end + dt.timedelta(weeks=after, days=1)


def _in_weeks(qs: QuerySet, day: Any, go_live: str, before: int, after: int) -> QuerySet:
    return qs.annotate(week=week_index(day, F(go_live))).filter(week__gte=-before, week__lt=after)


def _weekly(qs: QuerySet, day: Any, go_live: str, before: int, after: int) -> QuerySet:
    return _in_weeks(qs, day, go_live, before, after).values("week").order_by()


def _counts(rows: Iterable[dict[str, Any]]) -> dict[int, int]:
    return {row["week"]: row["n"] for row in rows}


def pilot_report(
    locations: list[Location], *, before: int = 8, after: int = 8, now: dt.datetime | None = None
) -> PilotReport:
    """Weekly figures for `locations` (all with a go-live date) around their go-live."""
    now = now or timezone.now()
    ids = [loc.pk for loc in locations]
    since, until = _window(locations, before, after)

    # Follow-ups completed, by the day they were closed, and how late that was.
    done = Followup.objects.filter(
        location_id__in=ids, status=Followup.Status.DONE, closed_at__gte=since, closed_at__lt=until
    ).alias(closed_day=LocalDate(F("closed_at"), F("location__time_zone")))
    late = Greatest(DaysBetween(F("closed_day"), F("due_date")), Value(0))
    done = _in_weeks(done, F("closed_day"), "location__go_live_date", before, after)
    completed = _counts(done.values("week").annotate(n=Count("pk")).order_by())
    medians, median_before, median_after = _medians(done, late)

    reminders = _counts(
        _weekly(
            OutboundMessage.objects.filter(
                location_id__in=ids,
                kind__in=REMINDER_KINDS,
                status__in=WENT_OUT,
                sent_at__gte=since,
                sent_at__lt=until,
            ),
            LocalDate(F("sent_at"), F("location__time_zone")),
            "location__go_live_date",
            before,
            after,
        ).annotate(n=Count("pk"))
    )
    confirmations = _counts(
        _weekly(
            InboundMessage.objects.filter(
                location_id__in=ids,
                action=InboundMessage.Action.CONFIRMED,
                received_at__gte=since,
                received_at__lt=until,
            ),
            LocalDate(F("received_at"), F("location__time_zone")),
            "location__go_live_date",
            before,
            after,
        ).annotate(n=Count("pk"))
    )
    visits = _weekly(
        Appointment.objects.filter(
            location_id__in=ids, status__in=ATTENDED, start__gte=since, start__lt=min(until, now)
        ),
        LocalDate(F("start"), F("location__time_zone")),
        "location__go_live_date",
        before,
        after,
    ).annotate(n=Count("pk", filter=Q(status=Appointment.Status.NO_SHOW)), outcomes=Count("pk"))
    no_shows, outcomes = {}, {}
    for row in visits:
        no_shows[row["week"]], outcomes[row["week"]] = row["n"], row["outcomes"]
    attempts = _counts(
        _weekly(
            ContactAttempt.objects.filter(
                followup__location_id__in=ids, attempted_at__gte=since, attempted_at__lt=until
            ),
            LocalDate(F("attempted_at"), F("followup__location__time_zone")),
            "followup__location__go_live_date",
            before,
            after,
        ).annotate(n=Count("pk"))
    )
    user_days = _active_user_days(locations, since, until)

    weeks = _week_frame(locations, before, after, now)
    for week in weeks:
        n = week.number
        week.values = {
            "completed": completed.get(n, 0),
            "median_overdue": medians.get(n),
            "reminders": reminders.get(n, 0),
            "confirmations": confirmations.get(n, 0),
            "no_shows": no_shows.get(n, 0),
            "no_show_rate": (no_shows.get(n, 0) / outcomes[n]) if outcomes.get(n) else None,
            "attempts": attempts.get(n, 0),
            "active_users": sum(len(user_days.get((n, d), ())) for d in range(week.days_elapsed))
            / week.days_elapsed,
        }
    return PilotReport(
        locations=locations,
        weeks=weeks,
        before=_summary([w for w in weeks if w.before], no_shows, outcomes, median_before),
        after=_summary([w for w in weeks if not w.before], no_shows, outcomes, median_after),
    )


def _medians(done: QuerySet, late: Any) -> tuple[dict[int, float], float | None, float | None]:
    """Median days overdue per week, and over all weeks before / after go-live.

    PostgreSQL computes medians itself; on the embedded SQLite the late-days are
    fetched (a demo's few thousand completions) and the medians taken here.
    """
    if Median.is_native(connection):
        per_week = {
            row["week"]: row["m"] for row in done.values("week").annotate(m=Median(late)).order_by()
        }
        side = Case(When(week__gte=0, then=Value(1)), default=Value(0))
        halves = {
            row["side"]: row["m"]
            for row in done.values(side=side).annotate(m=Median(late)).order_by()
        }
        return per_week, halves.get(0), halves.get(1)
    values: dict[int, list[int]] = defaultdict(list)
    for week, days in done.annotate(late=late).values_list("week", "late"):
        values[week].append(days)
    per_week = {week: float(statistics.median(v)) for week, v in values.items()}
    before = [d for w, v in values.items() if w < 0 for d in v]
    after = [d for w, v in values.items() if w >= 0 for d in v]
    return (
        per_week,
        float(statistics.median(before)) if before else None,
        float(statistics.median(after)) if after else None,
    )


def _active_user_days(
    locations: list[Location], since: dt.datetime, until: dt.datetime
) -> dict[tuple[int, int], set[str]]:
    """Who signed in, by (week, day of week) of the pilot, per the axes access log.

    Sessions end after 15 idle minutes, so everyone who works in PracticeCRM on a
    day signs in that day. A sign-in counts for a location when the person holds a
    role there; the day is on that location's calendar.
    """
    granted: dict[str, list[Location]] = defaultdict(list)
    grants = LocationGrant.objects.filter(location__in=locations, user__is_active=True).values_list(
        "user__username", "location_id"
    )
    by_id = {loc.pk: loc for loc in locations}
    for username, location_id in set(grants):
        granted[username].append(by_id[location_id])
    if not granted:
        return {}
    # One query: the sign-in instants, at most one row per person per hour.
    logins = (
        AccessLog.objects.filter(
            username__in=list(granted), attempt_time__gte=since, attempt_time__lt=until
        )
        .values_list("username", "attempt_time")
        .order_by()
    )
    days: dict[tuple[int, int], set[str]] = defaultdict(set)
    for username, moment in logins:
        for loc in granted[username]:
            assert loc.go_live_date is not None
            offset = (moment.astimezone(loc.tz).date() - loc.go_live_date).days
            days[offset // 7, offset % 7].add(username)
    return days


def _week_frame(
    locations: list[Location], before: int, after: int, now: dt.datetime
) -> list[PilotWeek]:
    """Weeks -before…-1 and 0…after-1, without weeks that have not begun anywhere."""
    elapsed_days = max(
        (now.astimezone(loc.tz).date() - loc.go_live_date).days + 1
        for loc in locations
        if loc.go_live_date
    )
    shared = {loc.go_live_date for loc in locations}
    go_live = shared.pop() if len(shared) == 1 else None
    weeks = []
    for number in range(-before, after):
        if number >= 0 and number * 7 >= elapsed_days:
            break
        days = 7 if number < 0 else min(7, elapsed_days - number * 7)
        start = go_live + dt.timedelta(weeks=number) if go_live else None
        weeks.append(PilotWeek(number=number, days_elapsed=days, start=start))
    return weeks


def _summary(
    weeks: list[PilotWeek],
    no_shows: dict[int, int],
    outcomes: dict[int, int],
    median: float | None,
) -> dict[str, Any]:
    """Per-week averages of each column over the weeks on one side of go-live."""
    if not weeks:
        return {}
    full = len(weeks)
    summary: dict[str, Any] = {}
    for key in ("completed", "reminders", "confirmations", "no_shows", "attempts"):
        summary[key] = sum(w.values[key] for w in weeks) / full
    summary["median_overdue"] = median
    shows = sum(outcomes.get(w.number, 0) for w in weeks)
    missed = sum(no_shows.get(w.number, 0) for w in weeks)
    summary["no_show_rate"] = missed / shows if shows else None
    days = sum(w.days_elapsed for w in weeks)
    summary["active_users"] = sum(w.values["active_users"] * w.days_elapsed for w in weeks) / days
    return summary
