"""Writes to follow-ups: from appointment events, attempts, snooze, dismiss, reopen, lapse."""

import datetime as dt
import threading
import zoneinfo

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from followups import services
from followups.models import CadenceRule, ContactAttempt, Discharge, Followup
from followups.tasks import lapse_followups
from patients import services as patient_services
from patients.models import Appointment, Patient
from tests.factories import (
    AppointmentFactory,
    AppointmentTypeFactory,
    CadenceRuleFactory,
    ContactAttemptFactory,
    FollowupFactory,
    FollowupTypeFactory,
    LocationFactory,
    PatientFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

Status = Followup.Status
Visit = Appointment.Status
Outcome = ContactAttempt.Outcome


@pytest.fixture
def hygiene(db):
    return AppointmentTypeFactory(name="Hygiene cleaning", code="hygiene-cleaning")


@pytest.fixture
def filling(db):
    return AppointmentTypeFactory(name="Filling", code="filling")


@pytest.fixture
def discharge_visit(db):
    return AppointmentTypeFactory(name="PT discharge visit", code="pt-discharge-visit")


@pytest.fixture
def treatment(db):
    return AppointmentTypeFactory(name="PT treatment session", code="pt-treatment-session")


@pytest.fixture
def hygiene_rule(hygiene):
    """Hygiene every six months: the visit that closes a recall also starts the next."""
    return CadenceRuleFactory(
        name="Hygiene recall",
        followup_type=FollowupTypeFactory(name="Hygiene recall", code="hygiene-recall", value=80),
        interval_value=6,
        interval_unit=CadenceRule.Unit.MONTHS,
        trigger_types=[hygiene],
        satisfying_types=[hygiene],
        lapse_after_days=180,
    )


@pytest.fixture
def checkin_rule(discharge_visit, treatment):
    """A check-in 90 days after the discharge visit, satisfied by another session."""
    return CadenceRuleFactory(
        name="PT maintenance check-in",
        followup_type=FollowupTypeFactory(name="PT check-in", code="pt-check-in"),
        interval_value=90,
        interval_unit=CadenceRule.Unit.DAYS,
        trigger_types=[discharge_visit],
        satisfying_types=[treatment],
        lapse_after_days=60,
        max_attempts=2,
    )


def visit(patient, appointment_type, *, start, status=Visit.COMPLETED, location=None):
    """An appointment entered by staff, through the service every writer uses."""
    appointment = AppointmentFactory.build(
        patient=patient,
        location=location or patient.home_location,
        appointment_type=appointment_type,
        start=start,
        status=status,
    )
    return patient_services.appointment_save(appointment=appointment, by=None)


def change(appointment, *, status=None, start=None):
    if status is not None:
        appointment.status = status
    if start is not None:
        appointment.start = start
        appointment.end = start + dt.timedelta(minutes=30)
    return patient_services.appointment_save(appointment=appointment, by=None)


def days(n: float) -> dt.timedelta:
    return dt.timedelta(days=n)


def active(patient) -> list[Followup]:
    return list(Followup.objects.filter(patient=patient, status__in=services.ACTIVE_STATUSES))


def entries(instance, action=None):
    logged = LogEntry.objects.get_for_object(instance)
    return logged if action is None else logged.filter(action=action)


# --- creation from completion ---------------------------------------------------------


def test_it_creates_a_followup_when_a_trigger_visit_is_completed(north_patient, hygiene_rule):
    start = timezone.now() - dt.timedelta(hours=3)
    cleaning = visit(
        north_patient, hygiene_rule.trigger_types.get(), start=start, status="scheduled"
    )
    assert not Followup.objects.exists()

    change(cleaning, status=Visit.COMPLETED)

    followup = Followup.objects.get()
    local_day = start.astimezone(north_patient.home_location.tz).date()
    assert followup.due_date == hygiene_rule.due_after(local_day)
    assert followup.lapses_on == followup.due_date + days(180)
    assert (followup.status, followup.source, followup.rule) == (Status.OPEN, "rule", hygiene_rule)
    assert (followup.location, followup.source_appointment) == (
        north_patient.home_location,
        cleaning,
    )
    assert followup.followup_type == hygiene_rule.followup_type
    assert entries(followup, LogEntry.Action.CREATE).count() == 1


def test_it_ignores_other_types_and_other_outcomes(north_patient, hygiene_rule, filling):
    now = timezone.now()
    visit(north_patient, filling, start=now - days(3))
    cleaning = visit(
        north_patient, hygiene_rule.trigger_types.get(), start=now - days(2), status=Visit.SCHEDULED
    )
    change(cleaning, status=Visit.CANCELLED)
    visit(
        north_patient, hygiene_rule.trigger_types.get(), start=now - days(1), status=Visit.NO_SHOW
    )
    assert not Followup.objects.exists()


def test_it_does_not_restart_the_cycle_when_a_completed_visit_is_saved_again(
    north_patient, hygiene_rule, hygiene
):
    cleaning = visit(north_patient, hygiene, start=timezone.now() - days(10))
    first = Followup.objects.get()
    change(cleaning, start=timezone.now() - days(9))  # a corrected time, still completed
    assert list(Followup.objects.all()) == [first]
    first.refresh_from_db()
    assert first.status == Status.OPEN


def test_it_applies_only_active_rules_at_their_locations(
    north_patient, south, hygiene_rule, hygiene
):
    hygiene_rule.all_locations = False
    hygiene_rule.save()
    hygiene_rule.locations.set([south])
    visit(north_patient, hygiene, start=timezone.now() - days(30))
    assert not Followup.objects.exists()

    visit(north_patient, hygiene, start=timezone.now() - days(20), location=south)
    followup = Followup.objects.get()
    assert followup.location == south

    hygiene_rule.is_active = False
    hygiene_rule.save()
    followup.delete()
    visit(north_patient, hygiene, start=timezone.now() - days(10), location=south)
    assert not Followup.objects.exists()


# --- due dates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "value", "unit", "due"),
    [
        (dt.date(2023, 8, 31), 6, "months", dt.date(2024, 2, 29)),  # into a leap February
        (dt.date(2024, 8, 31), 6, "months", dt.date(2025, 2, 28)),
        (dt.date(2025, 1, 31), 1, "months", dt.date(2025, 2, 28)),
        (dt.date(2025, 3, 31), 6, "months", dt.date(2025, 9, 30)),
        (dt.date(2024, 2, 29), 1, "years", dt.date(2025, 2, 28)),
        (dt.date(2024, 2, 29), 4, "years", dt.date(2028, 2, 29)),
        (dt.date(2024, 12, 25), 2, "weeks", dt.date(2025, 1, 8)),
        (dt.date(2024, 12, 20), 14, "days", dt.date(2025, 1, 3)),
        (dt.date(2024, 2, 20), 10, "days", dt.date(2024, 3, 1)),
    ],
)
def test_it_computes_due_dates_across_month_and_year_ends(day, value, unit, due):
    rule = CadenceRule(interval_value=value, interval_unit=unit)
    assert rule.due_after(day) == due


def test_it_clamps_a_completion_on_august_31_to_the_end_of_february(north, hygiene_rule, hygiene):
    patient = PatientFactory(home_location=north)
    # 21:00 in New York is already Sep 1 in UTC, whose six months would end on Mar 1.
    evening = dt.datetime(2024, 8, 31, 21, 0, tzinfo=north.tz)
    visit(patient, hygiene, start=evening)
    assert Followup.objects.get().due_date == dt.date(2025, 2, 28)


@pytest.mark.parametrize(
    ("time_zone", "local", "value", "unit", "due"),
    [
        # The last evening of daylight time: 23:30 CDT is 04:30 UTC on Nov 3.
        ("America/Chicago", dt.datetime(2024, 11, 2, 23, 30), 14, "days", dt.date(2024, 11, 16)),
        # The evening the clocks went back: 23:30 CST is 05:30 UTC the next day.
        ("America/Chicago", dt.datetime(2024, 11, 3, 23, 30), 14, "days", dt.date(2024, 11, 17)),
        # The evening before the clocks go forward: 22:45 PST is 06:45 UTC on Mar 9.
        ("America/Los_Angeles", dt.datetime(2025, 3, 8, 22, 45), 2, "weeks", dt.date(2025, 3, 22)),
        # The first evening of daylight time: 21:00 EDT is 01:00 UTC the next day.
        ("America/New_York", dt.datetime(2025, 3, 9, 21, 0), 6, "months", dt.date(2025, 9, 9)),
        # East of UTC the other way round: 00:30 CET is still Mar 29 in UTC.
        ("Europe/Berlin", dt.datetime(2025, 3, 30, 0, 30), 1, "years", dt.date(2026, 3, 30)),
    ],
)
def test_it_takes_the_due_date_from_the_locations_calendar_not_utcs(
    time_zone, local, value, unit, due, hygiene
):
    location = LocationFactory(time_zone=time_zone)
    CadenceRuleFactory(
        interval_value=value,
        interval_unit=unit,
        trigger_types=[hygiene],
        satisfying_types=[hygiene],
    )
    start = local.replace(tzinfo=zoneinfo.ZoneInfo(time_zone))
    assert start.astimezone(dt.UTC).date() != local.date()  # the case worth testing

    visit(PatientFactory(home_location=location), hygiene, start=start)

    followup = Followup.objects.get()
    assert followup.due_date == due
    assert followup.lapses_on == due + days(180)


# --- one active follow-up per patient and type ------------------------------------------


def test_a_newer_completion_closes_the_recall_and_starts_one_new_cycle(
    north_patient, hygiene_rule, hygiene
):
    now = timezone.now()
    first = visit(north_patient, hygiene, start=now - days(200))
    second = visit(north_patient, hygiene, start=now - days(5))
    [current] = active(north_patient)
    assert current.source_appointment == second
    assert current.due_date == hygiene_rule.due_after(second.local_start.date())
    done = Followup.objects.get(status=Status.DONE)
    assert (done.source_appointment, done.scheduled_appointment) == (first, second)
    assert done.closed_at is not None


def test_a_newer_trigger_moves_the_due_date_of_the_same_followup(
    north_patient, checkin_rule, discharge_visit
):
    now = timezone.now()
    visit(north_patient, discharge_visit, start=now - days(40))
    followup = Followup.objects.get()
    later = visit(north_patient, discharge_visit, start=now - days(3))

    assert list(Followup.objects.all()) == [followup]
    followup.refresh_from_db()
    assert followup.due_date == later.local_start.date() + days(90)
    assert followup.lapses_on == followup.due_date + days(60)
    assert followup.source_appointment == later


def test_an_older_completion_entered_late_never_moves_the_due_date_back(
    north_patient, checkin_rule, discharge_visit
):
    now = timezone.now()
    recent = visit(north_patient, discharge_visit, start=now - days(3))
    visit(north_patient, discharge_visit, start=now - days(100))  # back-entered history
    followup = Followup.objects.get()
    assert followup.due_date == recent.local_start.date() + days(90)
    assert followup.source_appointment == recent


def test_the_database_refuses_a_second_active_followup_of_one_type(north_patient):
    followup = FollowupFactory(patient=north_patient)
    FollowupFactory(patient=north_patient, followup_type=followup.followup_type, status=Status.DONE)
    with pytest.raises(IntegrityError), transaction.atomic():
        FollowupFactory(
            patient=north_patient, followup_type=followup.followup_type, status=Status.SCHEDULED
        )


def _race(*calls, barrier: threading.Barrier | None = None) -> list[BaseException]:
    """Run each call in its own thread (own connection, own transaction); return errors."""
    errors: list[BaseException] = []

    def run(call):
        try:
            call()
        except BaseException as exc:
            errors.append(exc)
            if barrier is not None:
                barrier.abort()  # the other racer must not wait for this one forever
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a racer hung"
    return errors


@pytest.fixture
def both_past_the_check(monkeypatch):
    """Hold each racer between "no active follow-up yet" and its INSERT until both got there.

    `_satisfying_booking` runs exactly there, once per created follow-up; without the
    barrier one thread usually finishes before the other starts and nothing races.
    """
    barrier = threading.Barrier(2, timeout=10)
    original = services._satisfying_booking

    def wait_then_look(followup):
        barrier.wait()
        return original(followup)

    monkeypatch.setattr(services, "_satisfying_booking", wait_then_look)
    return barrier


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_events_leave_one_active_followup(checkin_rule, both_past_the_check):
    patient = PatientFactory(home_location=LocationFactory())
    location = patient.home_location
    today = timezone.localdate()

    def event(day):
        return lambda: services.followup_from_event(
            patient=patient, location=location, rule=checkin_rule, event_date=day
        )

    errors = _race(event(today - days(30)), event(today - days(2)), barrier=both_past_the_check)

    assert errors == []
    [followup] = Followup.objects.all()
    assert followup.is_active
    # The loser moved the winner's row to the later of the two due dates.
    assert followup.due_date == today - days(2) + days(90)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_completions_leave_one_active_followup(hygiene_rule, both_past_the_check):
    hygiene = hygiene_rule.trigger_types.get()
    patient = PatientFactory(home_location=LocationFactory())
    now = timezone.now()
    booked = [
        AppointmentFactory(patient=patient, appointment_type=hygiene, start=now - days(n))
        for n in (40, 4)
    ]

    def complete(appointment):
        return lambda: change(appointment, status=Visit.COMPLETED)

    errors = _race(*map(complete, booked), barrier=both_past_the_check)

    assert errors == []
    assert Appointment.objects.filter(status=Visit.COMPLETED).count() == 2
    [followup] = active(patient)
    assert followup.due_date == hygiene_rule.due_after(booked[1].local_start.date())
    assert Followup.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_completions_for_different_patients_do_not_wait_for_each_other(hygiene_rule):
    """A long transaction (an import) must not lock the rule for everybody else.

    Locking the follow-ups with a plain select_for_update() over the rule's join
    would also lock the CadenceRule row every completion of that type reads.
    """
    hygiene = hygiene_rule.trigger_types.get()
    location = LocationFactory()
    now = timezone.now()
    first, second = (PatientFactory(home_location=location) for _ in range(2))
    for patient in (first, second):
        visit(patient, hygiene, start=now - days(200))
    holding, released = threading.Event(), threading.Event()

    def long_import():
        with transaction.atomic():
            visit(first, hygiene, start=now - days(3))
            holding.set()
            released.wait(timeout=10)

    def desk_completion():
        holding.wait(timeout=10)
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '2s'")
                visit(second, hygiene, start=now - days(2))
        finally:
            released.set()

    errors = _race(long_import, desk_completion)
    assert errors == []
    assert Followup.objects.filter(status=Status.OPEN).count() == 2


# --- suppression by a future booking --------------------------------------------------


def test_booking_a_satisfying_visit_schedules_the_followup(north_patient, hygiene_rule, hygiene):
    visit(north_patient, hygiene, start=timezone.now() - days(170))
    booking = visit(north_patient, hygiene, start=timezone.now() + days(12), status="confirmed")
    followup = Followup.objects.get()
    assert (followup.status, followup.scheduled_appointment) == (Status.SCHEDULED, booking)
    assert entries(followup, LogEntry.Action.UPDATE).exists()


def test_booking_another_type_changes_nothing(north_patient, hygiene_rule, hygiene, filling):
    visit(north_patient, hygiene, start=timezone.now() - days(170))
    visit(north_patient, filling, start=timezone.now() + days(12), status=Visit.SCHEDULED)
    assert Followup.objects.get().status == Status.OPEN


def test_a_followup_starts_scheduled_when_a_satisfying_visit_is_already_booked(
    north_patient, checkin_rule, discharge_visit, treatment
):
    now = timezone.now()
    later = visit(north_patient, treatment, start=now + days(30), status=Visit.SCHEDULED)
    sooner = visit(north_patient, treatment, start=now + days(9), status=Visit.SCHEDULED)
    visit(north_patient, discharge_visit, start=now - days(1))
    followup = Followup.objects.get()
    assert later != sooner
    assert (followup.status, followup.scheduled_appointment) == (Status.SCHEDULED, sooner)


def test_completing_the_booked_visit_closes_it_and_starts_the_next_cycle(
    north_patient, hygiene_rule, hygiene
):
    visit(north_patient, hygiene, start=timezone.now() - days(180))
    booking = visit(north_patient, hygiene, start=timezone.now() + days(2), status=Visit.SCHEDULED)
    # The visit happens (the scheduler moved it an hour earlier than booked) and is done.
    change(booking, status=Visit.COMPLETED, start=timezone.now() - dt.timedelta(hours=1))

    done = Followup.objects.get(status=Status.DONE)
    assert (done.scheduled_appointment, done.closed_at is not None) == (booking, True)
    [following] = active(north_patient)
    assert following.status == Status.OPEN
    assert following.due_date == hygiene_rule.due_after(booking.local_start.date())


# --- cancel and no-show reopen --------------------------------------------------------


@pytest.fixture
def scheduled(north_patient, hygiene_rule, hygiene):
    """An open recall, then a booked cleaning that scheduled it."""
    visit(north_patient, hygiene, start=timezone.now() - days(175))
    booking = visit(north_patient, hygiene, start=timezone.now() + days(5), status=Visit.SCHEDULED)
    followup = Followup.objects.get()
    assert followup.status == Status.SCHEDULED
    return followup, booking


@pytest.mark.parametrize("outcome", [Visit.CANCELLED, Visit.NO_SHOW])
def test_cancel_or_no_show_reopens_the_followup(scheduled, outcome):
    followup, booking = scheduled
    change(booking, status=outcome)
    followup.refresh_from_db()
    assert (followup.status, followup.scheduled_appointment) == (Status.OPEN, None)


def test_it_reopens_as_contacted_when_attempts_were_made(scheduled):
    followup, booking = scheduled
    ContactAttemptFactory(followup=followup, attempted_at=timezone.now() - days(20))
    change(booking, status=Visit.CANCELLED)
    followup.refresh_from_db()
    assert followup.status == Status.CONTACTED


def test_it_stays_scheduled_while_another_satisfying_visit_is_booked(scheduled, hygiene):
    followup, booking = scheduled
    other = visit(followup.patient, hygiene, start=timezone.now() + days(40), status="scheduled")
    change(booking, status=Visit.CANCELLED)
    followup.refresh_from_db()
    assert (followup.status, followup.scheduled_appointment) == (Status.SCHEDULED, other)


def test_a_booking_that_slipped_into_the_past_no_longer_holds_the_followup(scheduled):
    followup, booking = scheduled
    change(booking, start=timezone.now() - days(1))  # still "scheduled": nobody updated it
    followup.refresh_from_db()
    assert followup.status == Status.OPEN


# --- lapse ------------------------------------------------------------------------------


@pytest.fixture
def lapsing(north):
    today = timezone.localdate()

    def make(status=Status.OPEN, lapses_in=0):
        return FollowupFactory(
            patient=PatientFactory(home_location=north),
            status=status,
            due_date=today - days(200),
            lapses_on=today + days(lapses_in),
        )

    return {
        "open": make(),
        "contacted": make(Status.CONTACTED, lapses_in=-3),
        "not yet": make(lapses_in=1),
        "scheduled": make(Status.SCHEDULED, lapses_in=-3),
    }


def test_it_lapses_followups_past_their_threshold(lapsing):
    assert services.followups_lapse_due(today=timezone.localdate()) == 2
    statuses = {key: Followup.objects.get(pk=f.pk).status for key, f in lapsing.items()}
    assert statuses == {
        "open": Status.LAPSED,
        "contacted": Status.LAPSED,
        "not yet": Status.OPEN,
        "scheduled": Status.SCHEDULED,
    }
    entry = entries(lapsing["open"], LogEntry.Action.UPDATE).get()
    assert entry.changes["status"] == ["open", "lapsed"]
    assert Followup.objects.get(pk=lapsing["open"].pk).closed_at is not None


def test_the_beat_task_lapses_them_as_the_system_actor(lapsing):
    result = lapse_followups.apply()
    assert result.get() == 2
    entry = entries(lapsing["contacted"], LogEntry.Action.UPDATE).get()
    assert entry.actor.username == "system"
    assert services.followups_lapse_due() == 0  # nothing left to do


def test_it_lapses_after_the_rules_max_attempts(north_patient, checkin_rule, discharge_visit):
    visit(north_patient, discharge_visit, start=timezone.now() - days(100))
    followup = Followup.objects.get()
    clerk = UserFactory()
    services.followup_log_attempt(
        followup=followup, channel="call", outcome=Outcome.NO_ANSWER, by=clerk
    )
    followup.refresh_from_db()
    assert followup.status == Status.CONTACTED
    services.followup_log_attempt(
        followup=followup, channel="voicemail", outcome=Outcome.LEFT_MESSAGE, by=clerk
    )
    followup.refresh_from_db()
    assert followup.status == Status.LAPSED  # checkin_rule.max_attempts == 2
    assert followup.closed_at is not None


def test_a_followup_without_rule_lapses_after_the_default_attempts(north_patient, settings):
    settings.FOLLOWUP_DEFAULT_MAX_ATTEMPTS = 3
    followup = FollowupFactory(patient=north_patient)
    for _ in range(2):
        services.followup_log_attempt(
            followup=followup, channel="sms", outcome="no_answer", by=None
        )
    assert Followup.objects.get(pk=followup.pk).status == Status.CONTACTED
    services.followup_log_attempt(followup=followup, channel="sms", outcome="no_answer", by=None)
    assert Followup.objects.get(pk=followup.pk).status == Status.LAPSED


# --- contact attempts -----------------------------------------------------------------


@pytest.fixture
def reachable(north):
    return PatientFactory(
        home_location=north,
        mobile_phone="+15125550142",
        home_phone="+15125550143",
        email="kim@example.test",
        preferred_channel=Patient.PreferredChannel.SMS,
    )


def test_it_records_the_attempt_with_who_and_when(reachable):
    followup = FollowupFactory(patient=reachable)
    clerk = UserFactory()
    at = timezone.now() - dt.timedelta(minutes=5)
    attempt = services.followup_log_attempt(
        followup=followup, channel="call", outcome="declined", note="Next spring", by=clerk, at=at
    )
    assert (attempt.staff, attempt.attempted_at, attempt.note) == (clerk, at, "Next spring")
    # The follow-up's location, copied for the reports' location ranges.
    assert ContactAttempt.objects.get(pk=attempt.pk).location_id == followup.location_id
    assert Followup.objects.get(pk=followup.pk).status == Status.CONTACTED
    assert entries(attempt, LogEntry.Action.CREATE).exists()


def test_a_wrong_mobile_number_is_removed_and_sms_is_no_longer_preferred(reachable):
    followup = FollowupFactory(patient=reachable)
    services.followup_log_attempt(
        followup=followup, channel="call", outcome="wrong_number", phone="+15125550142", by=None
    )
    reachable.refresh_from_db()
    assert (reachable.mobile_phone, reachable.home_phone) == ("", "+15125550143")
    assert reachable.preferred_channel == Patient.PreferredChannel.EMAIL
    change_entry = entries(reachable, LogEntry.Action.UPDATE).get()
    assert set(change_entry.changes) >= {"mobile_phone", "preferred_channel"}
    assert Followup.objects.get(pk=followup.pk).status == Status.CONTACTED


def test_without_email_a_wrong_mobile_leaves_a_phone_call(reachable):
    reachable.email = ""
    reachable.save()
    followup = FollowupFactory(patient=reachable)
    services.followup_log_attempt(followup=followup, channel="sms", outcome="wrong_number", by=None)
    reachable.refresh_from_db()
    # No number given: the one the worklist offers first, the mobile, was wrong.
    assert (reachable.mobile_phone, reachable.home_phone) == ("", "+15125550143")
    assert reachable.preferred_channel == Patient.PreferredChannel.CALL


def test_a_wrong_home_number_keeps_the_sms_preference(reachable):
    followup = FollowupFactory(patient=reachable)
    services.followup_log_attempt(
        followup=followup, channel="call", outcome="wrong_number", phone="+15125550143", by=None
    )
    reachable.refresh_from_db()
    assert (reachable.mobile_phone, reachable.home_phone) == ("+15125550142", "")
    assert reachable.preferred_channel == Patient.PreferredChannel.SMS


def test_asked_not_to_be_contacted_sets_do_not_contact_and_dismisses(reachable):
    followup = FollowupFactory(patient=reachable)
    services.followup_log_attempt(
        followup=followup, channel="call", outcome="do_not_contact", by=None
    )
    reachable.refresh_from_db()
    followup.refresh_from_db()
    assert reachable.do_not_contact
    assert reachable.do_not_contact_reason.startswith("Asked not to be contacted (phone call")
    assert (followup.status, followup.dismissed_reason) == (
        Status.DISMISSED,
        "Patient asked not to be contacted",
    )
    assert entries(reachable, LogEntry.Action.UPDATE).get().changes["do_not_contact"]
    assert entries(followup, LogEntry.Action.UPDATE).get().changes["status"][1] == "dismissed"


def test_reached_and_booked_schedules_it_on_the_booking(north_patient, hygiene_rule, hygiene):
    visit(north_patient, hygiene, start=timezone.now() - days(190))
    followup = Followup.objects.get()
    # Booked in the scheduler, whose import has not run yet: the row says so anyway.
    booking = AppointmentFactory(
        patient=north_patient, appointment_type=hygiene, start=timezone.now() + days(8)
    )
    services.followup_log_attempt(followup=followup, channel="call", outcome="booked", by=None)
    followup.refresh_from_db()
    assert (followup.status, followup.scheduled_appointment) == (Status.SCHEDULED, booking)


def test_reached_and_booked_without_a_booking_waits_a_week_off_the_worklist(
    north_patient, hygiene_rule, hygiene, settings
):
    visit(north_patient, hygiene, start=timezone.now() - days(190))
    followup = Followup.objects.get()
    services.followup_log_attempt(followup=followup, channel="call", outcome="booked", by=None)
    followup.refresh_from_db()
    assert followup.status == Status.CONTACTED
    assert followup.snoozed_until == timezone.localdate() + days(
        settings.FOLLOWUP_BOOKING_GRACE_DAYS
    )


def test_it_refuses_to_dismiss_a_closed_followup(north_patient):
    followup = FollowupFactory(patient=north_patient, status=Status.DONE)
    with pytest.raises(ValidationError, match="already done"):
        services.followup_dismiss(followup=followup, reason="Moved", by=None)


def test_an_attempt_on_a_booked_followup_keeps_it_scheduled(scheduled):
    """Never chased while a satisfying visit is booked, whatever was logged meanwhile."""
    followup, booking = scheduled
    services.followup_log_attempt(followup=followup, channel="sms", outcome="no_answer", by=None)
    followup.refresh_from_db()
    assert (followup.status, followup.scheduled_appointment) == (Status.SCHEDULED, booking)
    assert followup.attempts.count() == 1


def test_it_refuses_an_attempt_on_a_closed_followup(north_patient):
    followup = FollowupFactory(patient=north_patient, status=Status.DONE)
    with pytest.raises(ValidationError, match="done"):
        services.followup_log_attempt(followup=followup, channel="call", outcome="booked", by=None)
    assert not ContactAttempt.objects.exists()


# --- snooze, dismiss, reopen ------------------------------------------------------------


def test_it_snoozes_and_wakes_a_followup_with_audit_entries(north_patient):
    followup = FollowupFactory(patient=north_patient)
    until = timezone.localdate() + days(14)
    services.followup_snooze(followup=followup, until=until, by=None)
    assert Followup.objects.get(pk=followup.pk).snoozed_until == until
    services.followup_snooze(followup=followup, until=None, by=None)
    assert Followup.objects.get(pk=followup.pk).snoozed_until is None
    changes = [e.changes["snoozed_until"] for e in entries(followup, LogEntry.Action.UPDATE)]
    assert sorted(changes) == sorted([["None", str(until)], [str(until), "None"]])


def test_dismissing_needs_a_reason(north_patient):
    followup = FollowupFactory(patient=north_patient)
    with pytest.raises(ValidationError) as caught:
        services.followup_dismiss(followup=followup, reason="  ", by=None)
    assert "reason" in caught.value.message_dict
    assert Followup.objects.get(pk=followup.pk).status == Status.OPEN

    services.followup_dismiss(followup=followup, reason="  Moving abroad ", by=None)
    followup.refresh_from_db()
    assert (followup.status, followup.dismissed_reason) == (Status.DISMISSED, "Moving abroad")
    assert followup.closed_at is not None
    assert entries(followup, LogEntry.Action.UPDATE).get().changes["status"] == [
        "open",
        "dismissed",
    ]


def test_reopening_a_dismissed_followup_puts_it_back(north_patient):
    followup = FollowupFactory(patient=north_patient)
    ContactAttemptFactory(followup=followup)
    services.followup_dismiss(followup=followup, reason="Moving abroad", by=None)
    services.followup_reopen(followup=followup, by=None)
    followup.refresh_from_db()
    assert (followup.status, followup.dismissed_reason, followup.closed_at) == (
        Status.CONTACTED,
        "",
        None,
    )
    assert entries(followup, LogEntry.Action.UPDATE).count() == 2


def test_reopening_a_lapsed_followup_gives_it_a_fresh_window(north_patient):
    today = timezone.localdate()
    followup = FollowupFactory(
        patient=north_patient, status=Status.LAPSED, due_date=today - days(300), lapses_on=today
    )
    services.followup_reopen(followup=followup, by=None)
    followup.refresh_from_db()
    assert followup.status == Status.OPEN
    assert followup.lapses_on == today + days(180)


def test_it_refuses_to_reopen_when_another_is_active(north_patient):
    old = FollowupFactory(patient=north_patient, status=Status.DISMISSED, dismissed_reason="x")
    FollowupFactory(patient=north_patient, followup_type=old.followup_type)
    with pytest.raises(ValidationError, match="already has another open"):
        services.followup_reopen(followup=old, by=None)
    assert Followup.objects.get(pk=old.pk).status == Status.DISMISSED


def test_reopening_while_a_satisfying_visit_is_booked_schedules_it(scheduled, hygiene):
    followup, booking = scheduled
    services.followup_dismiss(followup=followup, reason="Clicked by mistake", by=None)
    services.followup_reopen(followup=followup, by=None)
    followup.refresh_from_db()
    assert (followup.status, followup.scheduled_appointment) == (Status.SCHEDULED, booking)


# --- by hand and on discharge ------------------------------------------------------------


def test_it_creates_a_followup_by_hand_once(north_patient, hygiene_rule):
    due = timezone.localdate() + days(30)
    kwargs = {
        "patient": north_patient,
        "followup_type": hygiene_rule.followup_type,
        "location": north_patient.home_location,
        "due_date": due,
        "reason": "Asked to be called in a month",
        "by": None,
    }
    followup = services.followup_create(**kwargs)
    assert (followup.source, followup.rule, followup.lapses_on) == (
        "manual",
        hygiene_rule,
        due + days(180),
    )
    with pytest.raises(ValidationError, match="already has an open"):
        services.followup_create(**kwargs)


def test_a_discharge_starts_the_discharge_rules_of_its_location(north_patient, south, hygiene):
    pt_reeval = AppointmentTypeFactory(name="PT re-evaluation", code="pt-re-evaluation")
    reeval_rule = CadenceRuleFactory(
        name="PT re-evaluation",
        event=CadenceRule.Event.DISCHARGED,
        interval_value=14,
        interval_unit=CadenceRule.Unit.DAYS,
        satisfying_types=[pt_reeval],
        lapse_after_days=30,
    )
    CadenceRuleFactory(  # elsewhere only
        event=CadenceRule.Event.DISCHARGED,
        all_locations=False,
        locations=[south],
        satisfying_types=[pt_reeval],
    )
    CadenceRuleFactory(trigger_types=[hygiene], satisfying_types=[hygiene])  # completions only
    on = timezone.localdate() - days(3)
    clerk = UserFactory()

    discharge = services.discharge_record(
        patient=north_patient, location=north_patient.home_location, on=on, by=clerk
    )

    assert (discharge.discharged_on, discharge.recorded_by) == (on, clerk)
    assert entries(discharge, LogEntry.Action.CREATE).exists()
    followup = Followup.objects.get()
    assert (followup.rule, followup.due_date, followup.lapses_on) == (
        reeval_rule,
        on + days(14),
        on + days(44),
    )
    assert followup.source_appointment is None
    assert Discharge.objects.count() == 1


# --- review findings: late entries, stale bookings -----------------------------------


def test_an_old_visit_entered_late_leaves_the_current_recall_alone(
    north_patient, hygiene_rule, hygiene
):
    visit(north_patient, hygiene, start=timezone.now() - days(100))
    current = Followup.objects.get()
    visit(north_patient, hygiene, start=timezone.now() - days(900))  # from the paper chart
    current.refresh_from_db()
    assert current.status == Status.OPEN
    assert Followup.objects.filter(status__in=["open", "contacted", "scheduled"]).get() == current


def test_changing_the_booked_visit_to_another_type_reopens_the_follow_up(
    north_patient, hygiene_rule, hygiene, filling
):
    visit(north_patient, hygiene, start=timezone.now() - days(200))
    booking = visit(north_patient, hygiene, start=timezone.now() + days(5), status=Visit.SCHEDULED)
    followup = Followup.objects.get(status=Status.SCHEDULED)
    booking.appointment_type = filling
    patient_services.appointment_save(appointment=booking, by=None)
    followup.refresh_from_db()
    assert (followup.status, followup.scheduled_appointment) == (Status.OPEN, None)


def test_it_releases_follow_ups_whose_booked_visit_passed_unrecorded(
    north_patient, hygiene_rule, hygiene
):
    visit(north_patient, hygiene, start=timezone.now() - days(200))
    booking = visit(north_patient, hygiene, start=timezone.now() + days(1), status=Visit.SCHEDULED)
    Appointment.objects.filter(pk=booking.pk).update(start=timezone.now() - days(3))
    assert services.followups_release_stale_bookings() == 1
    assert Followup.objects.get().status == Status.OPEN


def test_a_wrong_number_on_an_email_attempt_keeps_the_phones(north_patient, hygiene_rule, hygiene):
    visit(north_patient, hygiene, start=timezone.now() - days(200))
    followup = Followup.objects.get()
    mobile = north_patient.mobile_phone
    services.followup_log_attempt(
        followup=followup, channel="email", outcome="wrong_number", phone=mobile, by=None
    )
    north_patient.refresh_from_db()
    assert north_patient.mobile_phone == mobile


def test_it_reopens_only_dismissed_or_lapsed_follow_ups(north_patient):
    done = FollowupFactory(patient=north_patient, status=Status.DONE)
    with pytest.raises(ValidationError, match="done"):
        services.followup_reopen(followup=done, by=None)
