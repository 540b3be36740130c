"""Planning reminders from visits and follow-ups, and the checks made before sending."""

import datetime as dt
import zoneinfo

import pytest
from django.utils import timezone

from followups.models import Followup
from patients.models import Appointment, ChannelConsent, Patient
from patients.services import appointment_save, consent_set, household_create, household_set
from reminders.models import OutboundMessage, OutreachPlan, ReminderSchedule
from reminders.planning import appointment_replan
from reminders.services import dispatch_due, message_send
from tests.factories import (
    AppointmentFactory,
    AppointmentTypeFactory,
    CadenceRuleFactory,
    ChannelConsentFactory,
    FollowupFactory,
    FollowupTypeFactory,
    LocationFactory,
    PatientFactory,
)

Status = OutboundMessage.Status
CHICAGO = zoneinfo.ZoneInfo("America/Chicago")


def local(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=CHICAGO)


@pytest.fixture
def clinic(db):
    return LocationFactory(
        name="Riverside Dental",
        time_zone="America/Chicago",
        sms_from_number="+15125550101",
        email_from="austin@riverside.example",
        module_appointment_reminders=True,
        address_line1="100 Congress Ave",
        city="Austin",
    )


def reachable(location, **kwargs) -> Patient:
    patient = PatientFactory(home_location=location, **{"first_name": "Ana", **kwargs})
    for channel in ("sms", "email"):
        ChannelConsentFactory(patient=patient, channel=channel)
    return patient


@pytest.fixture
def ana(clinic):
    return reachable(clinic)


def book(patient, start: dt.datetime, **kwargs) -> Appointment:
    appointment = AppointmentFactory.build(
        patient=patient,
        location=patient.home_location,
        appointment_type=AppointmentTypeFactory(code="hygiene", name="Hygiene"),
        start=start,
        end=start + dt.timedelta(minutes=45),
        **kwargs,
    )
    return appointment_save(appointment=appointment, by=None)


def rows(**filters):
    return list(OutboundMessage.objects.filter(**filters).order_by("scheduled_for"))


def soon(days: int, hour: int = 10, minute: int = 0) -> dt.datetime:
    """The first Wednesday at least `days` from now, at a clinic hour on Chicago's clock.

    A Wednesday, so that its 7-day, 2-day and 2-hour reminders all fall on open
    weekdays whatever day the suite runs.
    """
    day = timezone.now().astimezone(CHICAGO).date() + dt.timedelta(days=days)
    day += dt.timedelta(days=(2 - day.weekday()) % 7)
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=CHICAGO)


# --- appointments -------------------------------------------------------------------------


@pytest.mark.django_db
def test_booking_plans_the_default_schedule_in_the_patients_words(ana):
    visit = book(ana, soon(10))
    planned = rows(appointment=visit)
    assert [(m.step, m.channel, m.status) for m in planned] == [
        ("10080m:email", "email", Status.PLANNED),
        ("2880m:sms", "sms", Status.PLANNED),
        ("120m:sms", "sms", Status.PLANNED),
    ]
    sms = planned[1]
    assert sms.to == ana.mobile_phone and sms.sender == "+15125550101"
    assert "Hi Ana" in sms.body and "Riverside Dental" in sms.body
    assert "Reply C to confirm" in sms.body
    assert planned[0].subject.startswith("Your appointment on")
    assert planned[2].scheduled_for == visit.start - dt.timedelta(hours=2)


@pytest.mark.django_db
def test_a_visit_booked_for_tomorrow_only_gets_the_steps_still_ahead(ana):
    tomorrow = timezone.now().astimezone(CHICAGO).date() + dt.timedelta(days=1)
    visit = book(ana, dt.datetime.combine(tomorrow, dt.time(14), tzinfo=CHICAGO))
    assert [m.step for m in rows(appointment=visit)] == ["120m:sms"]


@pytest.mark.django_db
def test_rescheduling_moves_pending_reminders_and_cancelling_cancels_them(ana):
    visit = book(ana, soon(10))
    before = {m.step: m.pk for m in rows(appointment=visit)}
    visit.start, visit.end = soon(17), soon(17) + dt.timedelta(minutes=45)
    appointment_save(appointment=visit, by=None)
    after = rows(appointment=visit)
    assert {m.step: m.pk for m in after} == before  # the same rows, moved
    assert after[-1].scheduled_for == soon(17) - dt.timedelta(hours=2)
    visit.status = Appointment.Status.CANCELLED
    appointment_save(appointment=visit, by=None)
    assert {(m.status, m.reason) for m in rows(appointment=visit)} == {
        (Status.CANCELLED, "Appointment cancelled")
    }


@pytest.mark.django_db
def test_a_reminder_already_sent_is_not_resent_but_a_reschedule_plans_anew(ana):
    visit = book(ana, soon(10))
    email = rows(appointment=visit, channel="email")[0]
    OutboundMessage.objects.filter(pk=email.pk).update(status=Status.SENT)
    appointment_replan(visit)
    assert OutboundMessage.objects.filter(appointment=visit, step="10080m:email").count() == 1
    visit.start, visit.end = soon(24), soon(24) + dt.timedelta(minutes=45)
    appointment_save(appointment=visit, by=None)
    emails = rows(appointment=visit, step="10080m:email")
    assert [m.status for m in emails] == [Status.SENT, Status.PLANNED]


@pytest.mark.django_db
def test_a_location_schedule_per_type_beats_the_default(ana, clinic):
    hygiene = AppointmentTypeFactory(code="hygiene", name="Hygiene")
    ReminderSchedule.objects.create(
        location=clinic, steps=[{"minutes_before": 1440, "channel": "email"}]
    )
    ReminderSchedule.objects.create(
        location=clinic,
        appointment_type=hygiene,
        steps=[{"minutes_before": 4320, "channel": "preferred"}],
    )
    visit = book(ana, soon(10))
    assert [m.step for m in rows(appointment=visit)] == ["4320m:preferred"]


def switch_off_reminders(location) -> None:
    location.module_appointment_reminders = False
    location.save()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda p: ChannelConsent.objects.filter(patient=p, channel="sms").delete(),
            "No SMS consent",
        ),
        (lambda p: Patient.objects.filter(pk=p.pk).update(status="deceased"), "Deceased"),
        (lambda p: Patient.objects.filter(pk=p.pk).update(do_not_contact=True), "Do not contact"),
        (lambda p: Patient.objects.filter(pk=p.pk).update(mobile_phone=""), "No mobile number"),
        (
            lambda p: Patient.objects.filter(pk=p.pk).update(sms_opted_out_at=timezone.now()),
            "Opted out of SMS (replied STOP)",
        ),
        (
            lambda p: ChannelConsent.objects.filter(patient=p, channel="sms").update(
                appointment_reminders=False
            ),
            "Refused appointment reminders by SMS",
        ),
        (
            lambda p: switch_off_reminders(p.home_location),
            "Appointment reminders are switched off at Riverside Dental",
        ),
    ],
)
def test_a_blocked_reminder_is_recorded_with_its_reason(ana, change, reason):
    change(ana)
    visit = AppointmentFactory(patient=ana, start=soon(10), end=soon(10) + dt.timedelta(hours=1))
    sms = rows(appointment=visit, step="2880m:sms")[0]
    assert (sms.status, sms.reason) == (Status.SUPPRESSED, reason)


@pytest.mark.django_db
def test_consent_given_later_revives_the_suppressed_reminders(ana):
    ChannelConsent.objects.filter(patient=ana, channel="sms").delete()
    visit = book(ana, soon(10))
    assert rows(appointment=visit, step="2880m:sms")[0].status == Status.SUPPRESSED
    consent_set(patient=ana, channel="sms", status="granted", method="verbal", by=None)
    sms = rows(appointment=visit, step="2880m:sms")[0]
    assert (sms.status, sms.reason) == (Status.PLANNED, "")


@pytest.mark.django_db
def test_stop_between_planning_and_sending_suppresses_at_send_time(ana):
    visit = book(ana, soon(3))
    sms = rows(appointment=visit, step="2880m:sms")[0]
    Patient.objects.filter(pk=ana.pk).update(sms_opted_out_at=timezone.now())  # no signal
    dispatch_due(now=sms.scheduled_for)
    assert message_send(message_id=sms.pk, now=sms.scheduled_for) == Status.SUPPRESSED
    sms.refresh_from_db()
    assert sms.reason == "Opted out of SMS (replied STOP)"


@pytest.mark.django_db
def test_a_reminder_for_a_visit_cancelled_after_queueing_is_never_sent(ana):
    visit = book(ana, soon(3))
    sms = rows(appointment=visit, step="2880m:sms")[0]
    dispatch_due(now=sms.scheduled_for)
    Appointment.objects.filter(pk=visit.pk).update(status="cancelled")  # behind planning's back
    assert message_send(message_id=sms.pk, now=sms.scheduled_for) == Status.CANCELLED


# --- quiet hours ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_early_visits_two_hour_reminder_is_deferred_to_opening_not_dropped(ana):
    visit = book(ana, soon(5, 9, 0))  # 07:00 reminder → 08:00
    early = rows(appointment=visit, step="120m:sms")[0]
    assert early.status == Status.PLANNED
    assert early.scheduled_for.astimezone(CHICAGO).time() == dt.time(8, 0)
    assert early.reason.startswith("Quiet hours → deferred to")


@pytest.mark.django_db
def test_a_reminder_with_no_allowed_time_before_the_visit_says_so(ana):
    visit = book(ana, soon(5, 8, 30))  # 06:30, deferral to 08:00 is still before 08:30
    assert rows(appointment=visit, step="120m:sms")[0].status == Status.PLANNED
    visit2 = book(ana, soon(6, 7, 45))  # 05:45 → 08:00 is after the visit
    late = rows(appointment=visit2, step="120m:sms")[0]
    assert (late.status, late.reason) == (
        Status.SUPPRESSED,
        "Quiet hours: no time left to send before the visit",
    )


@pytest.mark.parametrize(
    ("zone", "moment", "expected"),
    [
        # Spring forward in Chicago: 02:30 does not exist; 08:00 local is 13:00 UTC.
        ("America/Chicago", dt.datetime(2027, 3, 14, 7, 0, tzinfo=dt.UTC), (2027, 3, 15, 8)),
        # Sunday closed → Monday 08:00 CDT.
        ("America/Chicago", dt.datetime(2027, 3, 13, 3, 0, tzinfo=dt.UTC), (2027, 3, 15, 8)),
        # Fall back: Friday 21:00 local → Monday 08:00 CST (UTC-6).
        ("America/Chicago", dt.datetime(2027, 11, 6, 2, 0, tzinfo=dt.UTC), (2027, 11, 8, 8)),
        # The same UTC instant is evening in Los Angeles but not yet morning in London.
        ("America/Los_Angeles", dt.datetime(2027, 6, 9, 4, 30, tzinfo=dt.UTC), (2027, 6, 9, 8)),
        ("Europe/London", dt.datetime(2027, 6, 9, 4, 30, tzinfo=dt.UTC), (2027, 6, 9, 8)),
        # Already inside the window: unchanged.
        ("Europe/London", dt.datetime(2027, 6, 9, 9, 0, tzinfo=dt.UTC), (2027, 6, 9, 10)),
    ],
)
def test_next_send_time_follows_the_locations_wall_clock_across_dst(zone, moment, expected):
    location = LocationFactory.build(time_zone=zone)  # Mon–Fri, 08:00–20:00
    result = location.next_send_time(moment).astimezone(zoneinfo.ZoneInfo(zone))
    assert (result.year, result.month, result.day, result.hour) == expected
    assert location.may_send_at(location.next_send_time(moment))


@pytest.mark.django_db
def test_a_due_row_caught_by_quiet_hours_at_send_time_waits_for_the_morning(ana):
    visit = book(ana, soon(6))
    sms = rows(appointment=visit, step="2880m:sms")[0]
    night = sms.scheduled_for.astimezone(CHICAGO).replace(hour=22)
    dispatch_due(now=night)
    assert message_send(message_id=sms.pk, now=night) == Status.PLANNED
    sms.refresh_from_db()
    assert sms.scheduled_for.astimezone(CHICAGO).hour == 8
    assert "deferred" in sms.reason


# --- household grouping --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_family_gets_one_message_for_two_childrens_visits_the_same_day(clinic):
    parent = reachable(clinic, first_name="Maria")
    household = household_create(patient=parent)
    kids = [
        PatientFactory(home_location=clinic, first_name=name, mobile_phone="")
        for name in ("Leo", "Ines")
    ]
    for kid in kids:
        household_set(patient=kid, household=household, is_primary=False)
    visits = [book(kid, soon(5, 15, 0 + 30 * i)) for i, kid in enumerate(kids)]
    first, second = (rows(appointment=v, step="2880m:sms")[0] for v in visits)
    assert first.recipient == parent and first.to == parent.mobile_phone
    assert first.status == second.status == Status.PLANNED
    at = first.scheduled_for
    dispatch_due(now=at)
    assert message_send(message_id=first.pk, now=at) == Status.SENT
    first.refresh_from_db()
    second.refresh_from_db()
    assert "Leo & Ines" in first.body
    assert (second.status, second.merged_into) == (Status.MERGED, first)
    assert second.reason == "Household: sent together in one message to Maria"
    # Replanning (any save of Ines) never revives a merged row.
    kids[1].save()
    second.refresh_from_db()
    assert second.status == Status.MERGED


@pytest.fixture
def family(clinic):
    parent = reachable(clinic, first_name="Maria")
    household = household_create(patient=parent)
    kids = [
        PatientFactory(home_location=clinic, first_name=name, mobile_phone="")
        for name in ("Leo", "Ines")
    ]
    for kid in kids:
        household_set(patient=kid, household=household, is_primary=False)
    return parent, kids


@pytest.mark.django_db
def test_siblings_due_the_same_minute_still_go_as_one_message(family):
    _, kids = family
    visits = [book(kid, soon(5, 15, 0)) for kid in kids]  # same time: same due minute
    first, second = (rows(appointment=v, step="2880m:sms")[0] for v in visits)
    at = first.scheduled_for
    # Only the two SMS count: on the days when the visit is more than a week off,
    # the 7-day email to the parent is due by then too, and is claimed beside them.
    claimed = [pk for pk in dispatch_due(now=at) if pk in (first.pk, second.pk)]
    assert len(claimed) == 1  # one send per recipient at a time
    message_send(message_id=claimed[0], now=at)
    # The other was folded in, not left to the cap.
    assert [pk for pk in dispatch_due(now=at) if pk in (first.pk, second.pk)] == []
    statuses = sorted(
        OutboundMessage.objects.filter(pk__in=[first.pk, second.pk]).values_list(
            "status", flat=True
        )
    )
    assert statuses == [Status.MERGED, Status.SENT]


@pytest.mark.django_db
def test_a_family_message_that_fails_gives_the_other_rows_back(family, settings):
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = "AC" + "0" * 32, "t"
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"  # nothing listens: retry later
    _, kids = family
    visits = [book(kid, soon(5, 15, 30 * i)) for i, kid in enumerate(kids)]
    first, second = (rows(appointment=v, step="2880m:sms")[0] for v in visits)
    dispatch_due(now=first.scheduled_for)
    assert message_send(message_id=first.pk, now=first.scheduled_for) == Status.PLANNED
    second.refresh_from_db()
    assert (second.status, second.merged_into) == (Status.PLANNED, None)


# --- recalls -------------------------------------------------------------------------------


@pytest.fixture
def recall_rule(clinic):
    OutreachPlan.objects.update_or_create(
        name="Standard recall",
        defaults={
            "steps": [
                {"days": -14, "channel": "email"},
                {"days": 0, "channel": "sms"},
                {"days": 14, "channel": "sms"},
            ]
        },
    )
    return CadenceRuleFactory(
        followup_type=FollowupTypeFactory(code="hygiene-recall", name="Hygiene recall"),
        outreach_plan="Standard recall",
    )


def recall(patient, rule, due: dt.date, **kwargs) -> Followup:
    return FollowupFactory(
        patient=patient,
        location=patient.home_location,
        followup_type=rule.followup_type,
        rule=rule,
        due_date=due,
        lapses_on=due + dt.timedelta(days=180),
        **kwargs,
    )


@pytest.mark.django_db
def test_a_recall_follows_its_plan_and_booking_suppresses_it(ana, recall_rule):
    due = timezone.localdate() + dt.timedelta(days=30)
    followup = recall(ana, recall_rule, due)
    planned = rows(followup=followup)
    assert [m.step for m in planned] == ["-14d:email", "0d:sms", "14d:sms"]
    assert all(m.kind == "recall" for m in planned)
    followup.status = Followup.Status.SCHEDULED
    followup.save()
    assert {(m.status, m.reason) for m in rows(followup=followup)} == {
        (Status.SUPPRESSED, "Future appointment booked")
    }
    followup.status = Followup.Status.OPEN  # the booking was cancelled
    followup.save()
    assert {m.status for m in rows(followup=followup)} == {Status.PLANNED}
    followup.status = Followup.Status.DONE
    followup.save()
    assert {m.status for m in rows(followup=followup)} == {Status.CANCELLED}


@pytest.mark.django_db
def test_recall_outreach_can_be_refused_by_sms_while_reminders_are_accepted(ana, recall_rule):
    ChannelConsent.objects.filter(patient=ana, channel="sms").update(recall_outreach=False)
    followup = recall(ana, recall_rule, timezone.localdate() + dt.timedelta(days=30))
    visit = book(ana, soon(10))
    assert rows(followup=followup, step="0d:sms")[0].reason == "Refused recall outreach by SMS"
    assert rows(appointment=visit, step="2880m:sms")[0].status == Status.PLANNED


@pytest.mark.django_db
def test_steps_whose_day_has_passed_are_not_sent_late(ana, recall_rule):
    followup = recall(ana, recall_rule, timezone.localdate() - dt.timedelta(days=3))
    assert [m.step for m in rows(followup=followup)] == ["14d:sms"]


@pytest.mark.django_db
def test_a_cancelled_visit_that_is_restored_gets_its_reminders_back(ana):
    visit = book(ana, soon(10))
    visit.status = Appointment.Status.CANCELLED
    appointment_save(appointment=visit, by=None)
    assert {m.status for m in rows(appointment=visit)} == {Status.CANCELLED}
    visit.status = Appointment.Status.SCHEDULED
    appointment_save(appointment=visit, by=None)
    assert {m.status for m in rows(appointment=visit)} == {Status.PLANNED}


@pytest.mark.django_db
def test_moving_a_visit_away_and_back_sends_each_reminder_once(ana):
    visit = book(ana, soon(10))
    sms = rows(appointment=visit, step="2880m:sms")[0]
    OutboundMessage.objects.filter(pk=sms.pk).update(status=Status.SENT)
    original = visit.start
    visit.start, visit.end = soon(24), soon(24) + dt.timedelta(minutes=45)
    appointment_save(appointment=visit, by=None)
    visit.start, visit.end = original, original + dt.timedelta(minutes=45)
    appointment_save(appointment=visit, by=None)
    two_day = rows(appointment=visit, step="2880m:sms")
    assert [m.status for m in two_day if m.status != Status.CANCELLED] == [Status.SENT]


@pytest.mark.django_db
def test_an_email_fallback_survives_replanning(ana):
    visit = book(ana, soon(10))
    sms = rows(appointment=visit, step="2880m:sms")[0]
    OutboundMessage.objects.filter(pk=sms.pk).update(status=Status.FAILED)
    fallback = OutboundMessage.objects.create(
        idempotency_key=f"{sms.idempotency_key}:email-fallback",
        kind=sms.kind,
        channel="email",
        step=f"{sms.step}:email-fallback",
        patient=ana,
        recipient=ana,
        location=sms.location,
        appointment=visit,
        to=ana.email,
        sender="x@example.com",
        body="b",
        scheduled_for=sms.scheduled_for,
    )
    appointment_replan(visit)
    fallback.refresh_from_db()
    assert fallback.status == Status.PLANNED
