"""Property-based tests over random appointment histories (hypothesis).

Each example runs in a transaction rolled back at its end, on top of one set of
locations, appointment types and cadence rules made once per test function.
"""

import datetime as dt
from dataclasses import dataclass

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from followups import services
from followups.models import ACTIVE_STATUSES, CadenceRule, ContactAttempt, Discharge, Followup
from locations.models import Location
from patients import services as patient_services
from patients.models import Appointment, AppointmentType, Patient
from tests.factories import (
    AppointmentFactory,
    AppointmentTypeFactory,
    CadenceRuleFactory,
    FollowupTypeFactory,
    LocationFactory,
    PatientFactory,
)

Visit = Appointment.Status
Status = Followup.Status
BOOKED = (Visit.SCHEDULED, Visit.CONFIRMED)
# Triggers and satisfiers of the rules below, plus a filling that is neither.
CODES = (
    "hygiene",
    "comp-exam",
    "periodic-exam",
    "discharge-visit",
    "treatment",
    "re-eval",
    "filling",
)
WHERE = ("north", "south")

# Each example is a fresh patient; no example database on disk (it is not in .gitignore).
examples = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class World:
    locations: dict[str, Location]
    types: dict[str, AppointmentType]


@pytest.fixture
def world(db) -> World:
    """Two locations in different zones and four rules, some scoped to one of them."""
    locations = {
        "north": LocationFactory(slug="north", time_zone="America/New_York"),
        "south": LocationFactory(slug="south", time_zone="America/Los_Angeles"),
    }
    types = {code: AppointmentTypeFactory(name=code, code=code) for code in CODES}
    CadenceRuleFactory(
        name="Hygiene recall",
        followup_type=FollowupTypeFactory(code="hygiene-recall"),
        trigger_types=[types["hygiene"]],
        satisfying_types=[types["hygiene"]],
    )
    CadenceRuleFactory(
        name="Periodic exam",
        followup_type=FollowupTypeFactory(code="exam-recall"),
        interval_value=12,
        trigger_types=[types["comp-exam"], types["periodic-exam"]],
        satisfying_types=[types["periodic-exam"], types["comp-exam"]],
        all_locations=False,
        locations=[locations["north"]],
    )
    CadenceRuleFactory(
        name="Maintenance check-in",
        followup_type=FollowupTypeFactory(code="check-in"),
        interval_value=90,
        interval_unit=CadenceRule.Unit.DAYS,
        trigger_types=[types["discharge-visit"]],
        satisfying_types=[types["treatment"]],
        lapse_after_days=60,
    )
    CadenceRuleFactory(
        name="Re-evaluation",
        followup_type=FollowupTypeFactory(code="re-eval"),
        event=CadenceRule.Event.DISCHARGED,
        interval_value=2,
        interval_unit=CadenceRule.Unit.WEEKS,
        satisfying_types=[types["re-eval"]],
        all_locations=False,
        locations=[locations["south"]],
        lapse_after_days=30,
    )
    return World(locations=locations, types=types)


def at(now: dt.datetime, days: int, minutes: int) -> dt.datetime:
    return now + dt.timedelta(days=days, minutes=minutes)


# --- invariants under random operations -------------------------------------------------

PICK = st.integers(0, 9)  # which of the patient's booked visits / active follow-ups
OPERATIONS = st.one_of(
    st.tuples(
        st.just("book"),
        st.sampled_from(CODES),
        st.sampled_from(WHERE),
        st.integers(1, 120),
        st.sampled_from(BOOKED),
    ),
    st.tuples(
        st.just("visit"), st.sampled_from(CODES), st.sampled_from(WHERE), st.integers(1, 720)
    ),
    st.tuples(st.sampled_from(["complete", "cancel", "no_show"]), PICK),
    st.tuples(st.just("reschedule"), PICK, st.integers(-30, 120).filter(bool)),
    st.tuples(st.just("attempt"), PICK, st.sampled_from(ContactAttempt.Outcome.values)),
    st.tuples(st.just("discharge"), st.sampled_from(WHERE), st.integers(0, 400)),
)


def _save(appointment: Appointment) -> None:
    patient_services.appointment_save(appointment=appointment, by=None)


def _apply(operation: tuple, patient: Patient, world: World, now: dt.datetime) -> None:
    kind, *args = operation
    booked = list(Appointment.objects.filter(patient=patient, status__in=BOOKED).order_by("pk"))
    if kind in ("book", "visit"):
        code, where, days = args[:3]
        start = at(now, days, 0) if kind == "book" else at(now, -days, 0)
        appointment = AppointmentFactory.build(
            patient=patient,
            location=world.locations[where],
            appointment_type=world.types[code],
            start=start,
            status=args[3] if kind == "book" else Visit.COMPLETED,
        )
        _save(appointment)
    elif kind in ("complete", "cancel", "no_show", "reschedule") and booked:
        appointment = booked[args[0] % len(booked)]
        if kind == "complete":
            # The visit took place: it is in the past now, whenever it was booked for.
            appointment.start = min(appointment.start, now - dt.timedelta(hours=1))
            appointment.status = Visit.COMPLETED
        elif kind == "reschedule":
            # Moved; into the past too: the day went by and nobody updated the booking.
            appointment.start = at(now, args[1], 0)
        else:
            appointment.status = Visit.CANCELLED if kind == "cancel" else Visit.NO_SHOW
        appointment.end = appointment.start + dt.timedelta(minutes=30)
        _save(appointment)
    elif kind == "attempt":
        active = list(Followup.objects.filter(patient=patient, status__in=ACTIVE_STATUSES))
        if active:
            followup = active[args[0] % len(active)]
            services.followup_log_attempt(
                followup=followup, channel="call", outcome=args[1], by=None
            )
    elif kind == "discharge":
        where, days_ago = args
        on = timezone.localdate() - dt.timedelta(days=days_ago)
        services.discharge_record(patient=patient, location=world.locations[where], on=on, by=None)


def _check(patient: Patient) -> None:
    followups = list(Followup.objects.filter(patient=patient).select_related("rule"))
    active = [f for f in followups if f.is_active]
    kinds = [f.followup_type_id for f in active]
    assert len(kinds) == len(set(kinds)), "two active follow-ups of one type"
    ahead = list(
        Appointment.objects.filter(patient=patient, status__in=BOOKED, start__gt=timezone.now())
    )
    for followup in active:
        satisfying = set(followup.rule.satisfying_types.values_list("pk", flat=True))
        waiting_on = {a.pk for a in ahead if a.appointment_type_id in satisfying}
        if followup.status in (Status.OPEN, Status.CONTACTED):
            assert not waiting_on, f"{followup} is {followup.status} with a visit booked"
        elif followup.scheduled_appointment_id is not None:
            # Scheduled on a booking: that booking is still ahead and still satisfies it.
            assert followup.scheduled_appointment_id in waiting_on, f"{followup} waits on nothing"


@examples
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=15))
def test_random_histories_keep_the_followup_invariants(world, operations):
    with transaction.atomic():
        now = timezone.now()
        patient = PatientFactory(home_location=world.locations["north"])
        for operation in operations:
            _apply(operation, patient, world, now)
            _check(patient)
        transaction.set_rollback(True)


# --- the backfill agrees with the event services ----------------------------------------

# Weighted towards what moves follow-ups: completed triggers, and bookings ahead.
STATUSES = (*[Visit.COMPLETED] * 4, Visit.CANCELLED, Visit.NO_SHOW, *BOOKED)
TRIGGER_HEAVY = (*CODES, "hygiene", "discharge-visit", "discharge-visit", "treatment")
EVENTS = st.one_of(
    st.tuples(
        st.just("visit"),
        st.sampled_from(TRIGGER_HEAVY),
        st.sampled_from(WHERE),
        # Whole days from now, never 0: a visit within seconds of "now" could be
        # ahead for one run and behind for the other.
        st.integers(-720, 120).filter(bool),
        # ± half a day in minutes: whatever the time now, some visits fall on
        # another date in UTC than at the location.
        st.integers(-720, 720),
        st.sampled_from(STATUSES),
    ),
    st.tuples(st.just("discharge"), st.sampled_from(WHERE), st.integers(1, 720)),
)


def _order(event: tuple, world: World, now: dt.datetime) -> dt.datetime:
    """When an event happened, in the order the backfill replays them."""
    if event[0] == "visit":
        return at(now, event[3], event[4])
    on = timezone.localdate() - dt.timedelta(days=event[2])
    return dt.datetime.combine(on, dt.time.max, tzinfo=world.locations[event[1]].tz)


def _rows(patient: Patient) -> list[tuple]:
    """A patient's follow-ups, with appointments named by their place in the history."""
    place = {
        pk: n
        for n, pk in enumerate(
            Appointment.objects.filter(patient=patient)
            .order_by("start", "pk")
            .values_list("pk", flat=True)
        )
    }
    return sorted(
        (
            f.followup_type_id,
            f.location_id,
            f.rule_id,
            f.status,
            f.due_date,
            f.lapses_on,
            f.source,
            place.get(f.source_appointment_id, -1),
            place.get(f.scheduled_appointment_id, -1),
            f.closed_at is None,
        )
        for f in Followup.objects.filter(patient=patient)
    )


@examples
@given(history=st.lists(EVENTS, max_size=20))
def test_the_backfill_equals_replaying_the_history_through_the_services(world, history):
    with transaction.atomic():
        now, today = timezone.now(), timezone.localdate()
        history = sorted(history, key=lambda event: _order(event, world, now))
        replayed, backfilled = (
            PatientFactory(home_location=world.locations["north"]) for _ in range(2)
        )

        def appointment(patient, event):
            _, code, where, days, minutes, status = event
            return AppointmentFactory.build(
                patient=patient,
                location=world.locations[where],
                appointment_type=world.types[code],
                start=at(now, days, minutes),
                status=status,
            )

        def discharge(patient, event):
            on = today - dt.timedelta(days=event[2])
            return {"patient": patient, "location": world.locations[event[1]], "on": on}

        # One patient's history through the services, one event at a time, then the
        # daily lapse…
        for event in history:
            if event[0] == "visit":
                _save(appointment(replayed, event))
            else:
                services.discharge_record(**discharge(replayed, event), by=None)
        services.followups_lapse_due(today=today)
        # …the same history written straight to the tables for another, then backfilled.
        for event in history:
            if event[0] == "visit":
                appointment(backfilled, event).save()
            else:
                fields = discharge(backfilled, event)
                Discharge.objects.create(
                    patient=fields["patient"],
                    location=fields["location"],
                    discharged_on=fields["on"],
                )
        created = services.followups_backfill(patient_ids=[backfilled.pk], today=today)

        assert _rows(backfilled) == _rows(replayed)
        assert len(created) == Followup.objects.filter(patient=backfilled).count()
        # A second run leaves patients who have follow-ups alone.
        assert services.followups_backfill(patient_ids=[backfilled.pk], today=today) == []
        transaction.set_rollback(True)


def test_the_backfill_skips_patients_who_have_followups(world):
    now = timezone.now()
    fresh, known = (PatientFactory(home_location=world.locations["north"]) for _ in range(2))
    for patient in (fresh, known):
        AppointmentFactory(
            patient=patient,
            appointment_type=world.types["hygiene"],
            start=now - dt.timedelta(days=30),
            status=Visit.COMPLETED,
        )
    services.followups_backfill(patient_ids=[fresh.pk])
    services.followups_backfill()
    assert Followup.objects.filter(patient=fresh).count() == 1
    assert Followup.objects.filter(patient=known).count() == 1
    assert services.followups_backfill() == []
