"""Each dashboard and pilot metric on a hand-built history with a known answer."""

import datetime as dt

import pytest
from axes.models import AccessLog

from locations.models import Role
from reports import metrics, pilot
from reports.sql import Median
from tests.factories import AppointmentFactory, LocationFactory, PatientFactory, staff

from .conftest import NOW, utc

pytestmark = pytest.mark.django_db

MARCH = (dt.date(2026, 3, 1), dt.date(2026, 3, 14))


def scope(*locations, period=MARCH):
    return metrics.Scope(tuple(locations), period[0], period[1], NOW)


def line(lines, location):
    return next(each for each in lines if each.key == location.pk)


def test_it_counts_due_past_due_and_lapsed(build, north):
    build.followup(north, due=dt.date(2026, 3, 5))  # due, past due and open
    build.followup(north, due=dt.date(2026, 3, 10), status="done")  # due, done
    build.followup(north, due=dt.date(2026, 2, 1), lapses=dt.date(2026, 3, 10))  # lapsed
    build.followup(north, due=dt.date(2026, 1, 1), lapses=dt.date(2026, 3, 12), status="lapsed")
    build.followup(north, due=dt.date(2026, 3, 20))  # after the period: nothing
    build.followup(north, due=dt.date(2026, 2, 10))  # past due before the period, open
    build.followup(north, due=dt.date(2026, 2, 10), status="dismissed")
    lines, total = metrics.recall_by_location(scope(north))
    got = line(lines, north)
    assert (got.due, got.overdue, got.lapsed) == (2, 2, 2)
    assert (total.due, total.overdue, total.lapsed) == (2, 2, 2)


def test_it_attributes_bookings_to_recall_within_the_window(build, north, settings):
    settings.REPORTS_ATTRIBUTION_DAYS = 14
    fa = build.followup(north, due=dt.date(2026, 2, 20))
    build.attempt(fa, utc(2026, 3, 3, 14))
    build.book(fa, recorded=utc(2026, 3, 8, 15))  # 5 days after: booked, converted
    fb = build.followup(north, due=dt.date(2026, 3, 1))
    build.attempt(fb, utc(2026, 3, 4, 14))
    build.book(fb, recorded=utc(2026, 3, 19, 15))  # 15 days after: not from recall
    fc = build.followup(north, due=dt.date(2026, 3, 10))
    build.message(north, kind="recall", followup=fc, status="delivered", at=utc(2026, 2, 27, 15))
    build.book(fc, recorded=utc(2026, 3, 2, 15), status="done")  # after a message, early
    fd = build.followup(north, due=dt.date(2026, 3, 1))
    build.attempt(fd, utc(2026, 3, 6, 14))  # contacted, booking since cancelled
    fe = build.followup(north, due=dt.date(2026, 3, 1))
    build.book(fe, recorded=utc(2026, 3, 5, 15))  # booked with no contact at all
    ff = build.followup(north, due=dt.date(2026, 3, 1))
    build.message(north, kind="recall", followup=ff, status="suppressed", at=utc(2026, 3, 2))
    build.book(ff, recorded=utc(2026, 3, 5, 15))  # the message never went out

    lines, _total = metrics.recall_by_location(scope(north))
    got = line(lines, north)
    assert (got.contacted, got.booked, got.converted) == (3, 2, 1)
    assert got.conversion == pytest.approx(1 / 3)
    # fa: booked Mar 8, due Feb 20 → 16 days; fc: booked before due → 0.
    assert got.avg_overdue == pytest.approx(8.0)
    booked = metrics.drill_rows(scope(north), "booked")
    assert set(booked) == {fa, fc}
    assert set(metrics.drill_rows(scope(north), "contacted")) == {fa, fb, fd}
    assert list(metrics.drill_rows(scope(north), "converted")) == [fa]


def test_it_uses_the_attribution_setting(build, north, settings):
    settings.REPORTS_ATTRIBUTION_DAYS = 20
    fb = build.followup(north, due=dt.date(2026, 3, 1))
    build.attempt(fb, utc(2026, 3, 4, 14))
    build.book(fb, recorded=utc(2026, 3, 12, 15))
    assert line(metrics.recall_by_location(scope(north))[0], north).booked == 1
    settings.REPORTS_ATTRIBUTION_DAYS = 7
    assert line(metrics.recall_by_location(scope(north))[0], north).booked == 0


def test_it_counts_attempts_on_the_locations_own_calendar(build, north, south):
    # South is in Los Angeles: 23:30 on Mar 14 there is 06:30 on Mar 15 in UTC.
    late = build.followup(south, due=dt.date(2026, 3, 1))
    build.attempt(late, utc(2026, 3, 15, 6, 30))
    # 23:30 on Feb 28 in Los Angeles is Mar 1 in UTC: before the period there.
    early = build.followup(south, due=dt.date(2026, 4, 1))
    build.attempt(early, utc(2026, 3, 1, 7, 30))
    # North is in New York: 01:30 UTC on Mar 15 is 21:30 on Mar 14 there.
    evening = build.followup(north, due=dt.date(2026, 4, 1))
    build.attempt(evening, utc(2026, 3, 15, 1, 30))
    lines, total = metrics.recall_by_location(scope(north, south))
    assert line(lines, south).contacted == 1
    assert line(lines, north).contacted == 1
    assert total.contacted == 2
    # The weekly trend puts the Los Angeles attempt in the week of Monday Mar 9.
    weeks = metrics.trend_weeks(scope(north, south))
    points = {p.monday: p.values for p in metrics.weekly_trends(scope(south), weeks)}
    assert points[dt.date(2026, 3, 9)]["attempts"] == 1
    assert points[dt.date(2026, 2, 23)]["attempts"] == 1  # Feb 28 is a Saturday
    assert sum(p["attempts"] for p in points.values()) == 2


def test_it_shows_zeros_for_a_location_without_data_and_an_empty_period(build, north, south):
    build.followup(north, due=dt.date(2026, 3, 5))
    lines, total = metrics.recall_by_location(scope(north, south))
    empty = line(lines, south)
    assert (empty.due, empty.contacted, empty.booked) == (0, 0, 0)
    assert empty.conversion is None and empty.avg_overdue is None
    later = (dt.date(2025, 6, 1), dt.date(2025, 6, 7))  # before any history
    lines, total = metrics.recall_by_location(scope(north, south, period=later))
    assert (total.due, total.contacted, total.booked, total.lapsed) == (0, 0, 0, 0)
    _reminders, rtotal = metrics.reminders_by_location(scope(north, south, period=later))
    assert rtotal.sent == 0 and rtotal.confirmation_rate is None
    assert metrics.recall_by_type(scope(north, south, period=later)) == []
    assert metrics.staff_conversion(scope(north, south, period=later)) == []


def test_it_counts_conversion_by_type_and_staff(build, north):
    nurse = staff(Role.FRONT_DESK, north, username="dana", first_name="Dana", last_name="Ruiz")
    other = staff(Role.FRONT_DESK, north, username="lee", first_name="Lee", last_name="Ng")
    fa = build.followup(north, due=dt.date(2026, 3, 1))
    build.attempt(fa, utc(2026, 3, 3, 14), staff=nurse)
    build.book(fa, recorded=utc(2026, 3, 5, 15))
    fb = build.followup(north, due=dt.date(2026, 3, 1))
    build.attempt(fb, utc(2026, 3, 3, 14), staff=nurse)
    build.attempt(fb, utc(2026, 3, 4, 14), staff=other)
    by_staff = {
        each.label: (each.contacted, each.converted)
        for each in metrics.staff_conversion(scope(north))
    }
    assert by_staff == {"Dana Ruiz": (2, 1), "Lee Ng": (1, 0)}
    by_type = metrics.recall_by_type(scope(north))
    assert [(t.label, t.contacted, t.booked) for t in by_type] == [("Hygiene recall", 2, 1)]
    rows = metrics.drill_rows(scope(north), "staff_converted", staff=nurse.pk)
    assert list(rows) == [fa]


def test_it_counts_messages_by_status_and_reason(build, north):
    at = utc(2026, 3, 5, 15)
    for status in ("sent", "delivered", "undelivered"):
        build.message(north, status=status, at=at)
    build.message(north, status="failed", at=at, sent=False)
    build.message(north, status="suppressed", at=at, sent=False, reason="No SMS consent")
    build.message(north, status="suppressed", at=at, sent=False, reason="No SMS consent")
    build.message(north, status="suppressed", at=at, sent=False, reason="Quiet hours")
    build.message(north, status="shadow", at=at, sent=False)
    build.message(north, status="planned", at=at, sent=False)  # not yet: not counted
    build.message(north, status="delivered", at=at, kind="confirmation_reply")  # not a reminder
    build.message(north, status="delivered", at=utc(2026, 3, 20, 12))  # after the period
    lines, _total = metrics.reminders_by_location(scope(north))
    got = line(lines, north)
    assert (got.sent, got.delivered, got.failed, got.suppressed, got.shadow) == (3, 1, 2, 3, 1)
    assert got.delivery_rate == pytest.approx(1 / 3)
    assert metrics.suppressed_reasons(scope(north)) == [
        {"reason": "No SMS consent", "n": 2},
        {"reason": "Quiet hours", "n": 1},
    ]


def test_it_compares_no_shows_of_reminded_and_unreminded_visits(build, north):
    def visit(status, *, reminded=False, confirmed=False):
        appointment = AppointmentFactory(
            patient=PatientFactory(home_location=north),
            location=north,
            start=utc(2026, 3, 6, 15),
            status=status,
        )
        if reminded:
            build.message(
                north, status="delivered", at=utc(2026, 3, 4, 15), appointment=appointment
            )
        if confirmed:
            build.reply(north, action="confirmed", at=utc(2026, 3, 4, 16), appointment=appointment)
        return appointment

    visit("completed", reminded=True, confirmed=True)
    visit("no_show", reminded=True)
    visit("completed")
    visit("no_show")
    visit("completed")
    visit("cancelled", reminded=True)  # reminded, no outcome
    got = line(metrics.reminders_by_location(scope(north))[0], north)
    assert (got.reminded, got.confirmed) == (3, 1)
    assert got.confirmation_rate == pytest.approx(1 / 3)
    assert (got.reminded_noshow, got.reminded_outcome) == (1, 2)
    assert (got.unreminded_noshow, got.unreminded_outcome) == (1, 3)
    assert got.reminded_noshow_rate == pytest.approx(0.5)
    assert got.unreminded_noshow_rate == pytest.approx(1 / 3)


def test_it_counts_opt_outs_and_unanswered_replies(build, north):
    build.reply(north, action="opt_out", at=utc(2026, 3, 3, 15))
    build.reply(north, action="opt_out", at=utc(2026, 2, 3, 15))  # before
    build.reply(north, action="inbox", at=utc(2026, 3, 3, 15))
    build.reply(north, action="inbox", at=utc(2026, 3, 3, 15), read=utc(2026, 3, 3, 16))
    got = line(metrics.reminders_by_location(scope(north))[0], north)
    assert (got.opt_outs, got.unanswered) == (1, 1)


# --- the pilot report -----------------------------------------------------------------


@pytest.fixture
def pilot_world(build, north):
    north.go_live_date = dt.date(2026, 3, 2)  # a Monday
    north.save()

    def done(closed, due):
        f = build.followup(north, due=due, status="done")
        type(f).objects.filter(pk=f.pk).update(closed_at=closed)

    done(utc(2026, 2, 25, 15), dt.date(2026, 2, 20))  # week -1, 5 days late
    done(utc(2026, 2, 26, 15), dt.date(2026, 3, 1))  # week -1, early: 0
    done(utc(2026, 3, 3, 15), dt.date(2026, 2, 1))  # week 0, 30 days
    done(utc(2026, 3, 4, 15), dt.date(2026, 2, 25))  # week 0, 7 days
    done(utc(2026, 3, 5, 15), dt.date(2026, 3, 4))  # week 0, 1 day
    # 23:30 on Mar 1 in New York is Mar 2 in UTC: still the week before go-live.
    done(utc(2026, 3, 2, 4, 30), dt.date(2026, 3, 1))
    f = build.followup(north, due=dt.date(2026, 3, 1))
    build.attempt(f, utc(2026, 3, 3, 14))
    build.attempt(f, utc(2026, 3, 10, 14))
    build.attempt(f, utc(2026, 3, 11, 14))
    message = build.message(north, status="delivered", at=utc(2026, 3, 10, 14))
    build.reply(north, action="confirmed", at=utc(2026, 3, 10, 15))
    del message
    for status, day in (("no_show", 18), ("completed", 19)):
        AppointmentFactory(
            patient=PatientFactory(home_location=north),
            location=north,
            start=utc(2026, 2, day, 15),
            status=status,
        )
    manager = staff(Role.PRACTICE_MANAGER, north, username="pm")
    desk = staff(Role.FRONT_DESK, north, username="desk")
    del manager, desk
    for username, moment in (
        ("pm", utc(2026, 3, 2, 13)),
        ("pm", utc(2026, 3, 3, 13)),
        ("pm", utc(2026, 3, 3, 18)),  # twice on one day: once
        ("desk", utc(2026, 3, 3, 13)),
        ("stranger", utc(2026, 3, 3, 13)),  # no role here
    ):
        log = AccessLog.objects.create(username=username, ip_address="192.0.2.1")
        AccessLog.objects.filter(pk=log.pk).update(attempt_time=moment)
    return north


def test_it_reports_the_weeks_around_go_live(pilot_world):
    report = pilot.pilot_report([pilot_world], before=2, after=3, now=NOW)
    assert [w.label for w in report.weeks] == [
        "Week -2",
        "Week -1",
        "Week +1",
        "Week +2",
        "Week +3",
    ]
    assert [w.days_elapsed for w in report.weeks] == [7, 7, 7, 7, 5]
    assert report.weeks[0].start == dt.date(2026, 2, 16)
    by = {w.number: w.values for w in report.weeks}
    assert [by[n]["completed"] for n in (-2, -1, 0, 1, 2)] == [0, 3, 3, 0, 0]
    assert by[-1]["median_overdue"] == 0.0  # 5, 0, 0
    assert by[0]["median_overdue"] == 7.0  # 30, 7, 1
    assert by[-2]["median_overdue"] is None
    assert [by[n]["attempts"] for n in (-2, -1, 0, 1, 2)] == [0, 0, 1, 2, 0]
    assert [by[n]["reminders"] for n in (-2, -1, 0, 1, 2)] == [0, 0, 0, 1, 0]
    assert [by[n]["confirmations"] for n in (-2, -1, 0, 1, 2)] == [0, 0, 0, 1, 0]
    assert by[-2]["no_shows"] == 1 and by[-2]["no_show_rate"] == pytest.approx(0.5)
    assert by[-1]["no_show_rate"] is None
    # Mar 2: pm; Mar 3: pm and desk → 3 sign-in days over 7 days.
    assert by[0]["active_users"] == pytest.approx(3 / 7)
    assert by[1]["active_users"] == 0
    assert report.before["completed"] == pytest.approx(1.5)
    assert report.after["completed"] == pytest.approx(1.0)
    assert report.before["median_overdue"] == 0.0
    assert report.after["median_overdue"] == 7.0
    assert report.after["active_users"] == pytest.approx(3 / 19)


def test_it_takes_the_median_in_python_where_the_database_cannot(pilot_world, monkeypatch):
    native = pilot.pilot_report([pilot_world], before=2, after=3, now=NOW)
    monkeypatch.setattr(Median, "is_native", staticmethod(lambda connection: False))
    fallback = pilot.pilot_report([pilot_world], before=2, after=3, now=NOW)
    assert [w.values for w in fallback.weeks] == [w.values for w in native.weeks]
    assert fallback.after == native.after and fallback.before == native.before


def test_it_lines_up_a_group_by_each_locations_go_live(build, pilot_world, south):
    south.go_live_date = dt.date(2026, 3, 9)
    south.save()
    f = build.followup(south, due=dt.date(2026, 3, 1))
    build.attempt(f, utc(2026, 3, 10, 20))  # south's week +1
    report = pilot.pilot_report([pilot_world, south], before=2, after=3, now=NOW)
    by = {w.number: w.values for w in report.weeks}
    assert by[0]["attempts"] == 2  # north's Mar 3 and south's Mar 10
    assert report.weeks[0].start is None  # no single calendar date for a mixed group


def test_it_reports_nothing_for_a_location_without_history(db):
    quiet = LocationFactory(go_live_date=dt.date(2026, 3, 2))
    report = pilot.pilot_report([quiet], before=2, after=2, now=NOW)
    assert all(w.values["completed"] == 0 for w in report.weeks)
    assert all(w.values["median_overdue"] is None for w in report.weeks)
    assert report.before["median_overdue"] is None
