"""The dashboard's fast counts equal the metrics' definitions, on random histories (#7).

The dashboard counts follow-ups in one hand-written statement on PostgreSQL
(reports.onepass), and reminders, visits and messages with each flag evaluated
once a row (metrics._flag_counts). The definitions stay the ORM filters the
drill-down lists use; these tests count both ways on histories with every status,
contacts on both sides of each boundary, messages sent from another location,
and three time zones, and demand the same numbers.
"""

import datetime as dt
import random

import pytest
from django.db.models import Count

from followups.models import Followup, FollowupType
from locations.models import Role
from reminders import tallies as outbox_tallies
from reminders.models import OutboundMessage
from reports import metrics, onepass
from reports.sql import week_index
from tests.factories import AppointmentFactory, LocationFactory, PatientFactory, staff

from .conftest import NOW, utc

pytestmark = pytest.mark.django_db

STATUSES = ["open", "contacted", "scheduled", "scheduled", "done", "done", "dismissed", "lapsed"]
OUTBOX = ["sent", "delivered", "undelivered", "failed", "suppressed", "planned", "shadow"]
# Any status may carry a reason; only "Not sent, by reason" lists them.
REASONS = ["", "No SMS consent", "Do not contact"]

SCOPES = [
    # (start, end, now): a fortnight, the month around "now", a quarter, and a
    # "now" just after midnight UTC, when the locations' "today" differ.
    (dt.date(2026, 3, 1), dt.date(2026, 3, 14), NOW),
    (dt.date(2026, 2, 21), dt.date(2026, 3, 20), NOW),
    (dt.date(2026, 1, 1), dt.date(2026, 3, 31), NOW),
    (dt.date(2026, 3, 16), dt.date(2026, 3, 20), utc(2026, 3, 20, 3, 30)),
]


@pytest.fixture
def history(build):
    rng = random.Random(7)
    locations = [
        LocationFactory(name="East", slug="east", time_zone="America/New_York"),
        LocationFactory(name="West", slug="west", time_zone="America/Los_Angeles"),
        LocationFactory(name="Far", slug="far", time_zone="Asia/Tokyo"),
    ]
    types = [build.recall, FollowupType.objects.create(code="perio", name="Perio")]
    callers = [None] + [
        staff(Role.FRONT_DESK, *locations, username=name, first_name=first, last_name=last)
        for name, first, last in (("zed", "Zed", "Zeta"), ("amy", "", ""), ("bob", "Bob", ""))
    ]
    base = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)

    def moment() -> dt.datetime:
        return base + dt.timedelta(minutes=rng.randint(-80 * 1440, 50 * 1440))

    for _ in range(90):
        location = rng.choice(locations)
        due = dt.date(2026, 3, 1) + dt.timedelta(days=rng.randint(-90, 45))
        followup = build.followup(
            location,
            due=due,
            lapses=due + dt.timedelta(days=rng.randint(5, 60)),
            status=rng.choice(STATUSES),
            followup_type=rng.choice(types),
        )
        contacts = [moment() for _ in range(rng.randint(0, 3))]
        for at in contacts:
            build.attempt(followup, at, staff=rng.choice(callers))
        for _ in range(rng.randint(0, 2)):
            status = rng.choice(OUTBOX)
            contacts.append(moment())
            build.message(
                rng.choice([location, location, rng.choice(locations)]),
                kind="recall",
                followup=followup,
                status=status,
                at=contacts[-1],
                sent=status in ("sent", "delivered", "undelivered"),
                reason=REASONS[build.n % 3],
            )
        if followup.status in ("scheduled", "done") or rng.random() < 0.2:
            # Mostly a day before to three weeks after a contact: around the window.
            recorded = moment()
            if contacts and rng.random() < 0.8:
                recorded = rng.choice(contacts) + dt.timedelta(minutes=rng.randint(-1440, 30240))
            build.book(followup, recorded=recorded, status=followup.status)
    for _ in range(60):
        location = rng.choice(locations)
        start = moment()
        visit = AppointmentFactory(
            patient=PatientFactory(home_location=location),
            location=location,
            start=start,
            status=rng.choice(["completed", "completed", "no_show", "cancelled", "scheduled"]),
        )
        status = rng.choice(OUTBOX)
        build.message(
            location,
            appointment=visit,
            patient=visit.patient,
            status=status,
            at=start - dt.timedelta(days=2),
            sent=status in ("sent", "delivered", "undelivered"),
            reason=REASONS[build.n % 3],
        )
        if rng.random() < 0.4:
            build.reply(
                location, action="confirmed", at=start - dt.timedelta(days=1), appointment=visit
            )
    return locations


def _scopes(locations):
    for start, end, now in SCOPES:
        yield metrics.Scope(tuple(locations), start, end, now)
        yield metrics.Scope(tuple(locations[1:2]), start, end, now)


@pytest.mark.skipif(not onepass.available(), reason="the one-pass SQL is PostgreSQL's")
def test_it_counts_follow_ups_in_one_pass_as_the_filters_do(history, monkeypatch):
    for scope in _scopes(history):
        weeks = metrics.trend_weeks(scope)
        tallies = metrics.dashboard_tallies(scope, weeks)
        fast = tallies.followups.cells
        assert fast == metrics._followup_counts(scope)  # with or without the chart's weeks
        fast_trend = metrics.weekly_trends(scope, weeks, tallies)
        with monkeypatch.context() as m:
            m.setattr(onepass, "available", lambda: False)
            slow = metrics._followup_counts(scope)
            slow_trend = metrics.weekly_trends(scope, weeks)
        assert {k: v for k, v in fast.items() if any(v.values())} == {
            k: v for k, v in slow.items() if any(v.values())
        }
        assert [p.values for p in fast_trend] == [p.values for p in slow_trend]
        fast_staff = metrics.staff_conversion(scope, tallies)
        slow_staff = metrics.staff_conversion(scope)
        assert [(s.key, s.label, s.contacted, s.converted) for s in fast_staff] == [
            (s.key, s.label, s.contacted, s.converted) for s in slow_staff
        ]
        assert sum(row["booked"] for row in fast.values()) == (
            metrics.drill_rows(scope, "booked").count()
        )


def test_it_counts_every_follow_up_metric_as_its_list(history):
    for scope in _scopes(history):
        counts = metrics._followup_counts(scope)
        for name in metrics.FOLLOWUP_METRICS:
            listed = (
                metrics.drill_rows(scope, name)
                .values("location_id", "followup_type_id")
                .annotate(n=Count("pk"))
                .order_by()
            )
            expected = {(r["location_id"], r["followup_type_id"]): r["n"] for r in listed}
            got = {key: row[name] for key, row in counts.items() if row[name]}
            assert got == expected, (scope, name)


def test_it_counts_reminders_visits_and_weeks_as_their_lists(history):
    for scope in _scopes(history):
        weeks = metrics.trend_weeks(scope)
        tallies = metrics.message_tallies(scope, weeks)
        lines, _total = metrics.reminders_by_location(scope, tallies)
        for line in lines:
            for name in (*metrics.MESSAGE_METRICS, *metrics.APPOINTMENT_METRICS):
                listed = metrics.drill_rows(scope, name).filter(location_id=line.key).count()
                assert getattr(line, name) == listed, (scope, line.label, name)
        wide = metrics.Scope(scope.locations, weeks[0], weeks[-1] + dt.timedelta(days=6), scope.now)
        trend = metrics.weekly_trends(scope, weeks, tallies)
        for name, metric in (
            ("sent", "sent"),
            ("delivered", "delivered"),
            ("failed", "failed"),
            ("recall_messages", "recall_messages"),
        ):
            listed = (
                metrics.drill_rows(wide, metric)
                .values(week=week_index("day", weeks[0]))
                .annotate(n=Count("pk"))
                .order_by()
            )
            by_week = {row["week"]: row["n"] for row in listed}
            assert [p.values[name] for p in trend] == [
                by_week.get(i, 0) for i in range(len(weeks))
            ], (scope, name)


def test_a_contact_after_the_period_leaves_the_conversion_in_it(build, north):
    # Contacted on the 10th and the 16th, booked on the 18th: converted in the first
    # half of March (its contact of the 10th is within the window), booked after it.
    followup = build.followup(north, due=dt.date(2026, 3, 2))
    build.attempt(followup, utc(2026, 3, 10, 15))
    build.attempt(followup, utc(2026, 3, 16, 15))
    build.book(followup, recorded=utc(2026, 3, 18, 15), status="scheduled")
    for start, end, expected in (
        (dt.date(2026, 3, 1), dt.date(2026, 3, 14), (1, 0, 1)),
        (dt.date(2026, 3, 15), dt.date(2026, 3, 21), (1, 1, 1)),
        (dt.date(2026, 3, 1), dt.date(2026, 3, 9), (0, 0, 0)),
    ):
        scope = metrics.Scope((north,), start, end, NOW)
        lines = metrics.recall_by_location(scope)[0]
        counts = (lines[0].contacted, lines[0].booked, lines[0].converted) if lines else (0, 0, 0)
        assert counts == expected, (start, end)
        assert counts == tuple(
            metrics.drill_rows(scope, name).count() for name in ("contacted", "booked", "converted")
        )


def test_it_keeps_a_booking_with_an_open_status_out_of_booked(build, north):
    followup = build.followup(north, due=dt.date(2026, 3, 2))
    build.attempt(followup, utc(2026, 3, 3, 14))
    build.book(followup, recorded=utc(2026, 3, 5, 15), status="open")  # since cancelled
    scope = metrics.Scope((north,), dt.date(2026, 3, 1), dt.date(2026, 3, 14), NOW)
    line = metrics.recall_by_location(scope)[0][0]
    assert (line.contacted, line.booked, line.converted) == (1, 0, 0)
    assert Followup.objects.get(pk=followup.pk).scheduled_appointment_id is not None


@pytest.mark.skipif(not outbox_tallies.available(), reason="PostgreSQL keeps the tally")
def test_it_counts_messages_from_the_tally_as_from_the_rows(history, monkeypatch):
    # Half the changes folded into the tally, half still pending: both are read.
    outbox_tallies.compact()
    first = OutboundMessage.objects.order_by("pk").first()
    OutboundMessage.objects.filter(pk=first.pk).update(status="failed")
    for scope in _scopes(history):
        weeks = metrics.trend_weeks(scope)
        kept = metrics.message_tallies(scope, weeks)
        reasons = metrics.suppressed_reasons(scope)
        with monkeypatch.context() as m:
            m.setattr(outbox_tallies, "available", lambda: False)
            counted = metrics.message_tallies(scope, weeks)
            assert reasons == metrics.suppressed_reasons(scope)
        assert kept.messages_by_location == counted.messages_by_location
        assert kept.messages_by_week == counted.messages_by_week
