"""Sending the dispatcher's rows in batches: one claim, one check, one record each (#7).

The guarantees are those of one message at a time — each row claimed by one
delivery only, checked again under the recipient's lock, the cap counted as if
they went one by one — with a commit per step of the batch instead of three per
message.
"""

import datetime as dt
import zoneinfo

import pytest
from django.utils import timezone

from reminders import services
from reminders.models import OutboundMessage
from reminders.services import dispatch_due, messages_send
from tests.factories import (
    AppointmentFactory,
    ChannelConsentFactory,
    LocationFactory,
    PatientFactory,
)
from tests.reminders.test_outbox import SID, TOKEN
from tests.twilio_server import TwilioServer

Status = OutboundMessage.Status
Kind = OutboundMessage.Kind
CHICAGO = zoneinfo.ZoneInfo("America/Chicago")


@pytest.fixture
def twilio(settings):
    server = TwilioServer(account_sid=SID, auth_token=TOKEN).start()
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
    settings.TWILIO_API_BASE_URL = server.url
    yield server
    server.stop()


@pytest.fixture
def clinic(db):
    return LocationFactory(
        name="Riverside Dental",
        time_zone="America/Chicago",
        sms_from_number="+15125550101",
        module_appointment_reminders=True,
        business_hours={d: ["08:00", "18:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat")},
        cap_per_day=1,
    )


def reachable(clinic, **kwargs):
    patient = PatientFactory(home_location=clinic, **kwargs)
    for channel in ("sms", "email"):
        ChannelConsentFactory(patient=patient, channel=channel)
    return patient


def queued(patient, *, key, kind=Kind.APPOINTMENT_REMINDER, channel="sms"):
    visit = None
    if kind == Kind.APPOINTMENT_REMINDER:
        start = timezone.now() + dt.timedelta(days=3)
        visit = AppointmentFactory(patient=patient, start=start, end=start + dt.timedelta(hours=1))
    return OutboundMessage.objects.create(
        idempotency_key=key,
        kind=kind,
        channel=channel,
        patient=patient,
        recipient=patient,
        location=patient.home_location,
        appointment=visit,
        to=patient.mobile_phone if channel == "sms" else patient.email,
        sender="+15125550101",
        body="Riverside Dental: see you soon.",
        scheduled_for=timezone.now(),
        status=Status.QUEUED,
    )


def noon() -> dt.datetime:
    day = timezone.now().astimezone(CHICAGO).date()
    while day.weekday() == 6:
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time(12), tzinfo=CHICAGO)


@pytest.mark.django_db
def test_it_sends_a_batch_once_and_records_each_rows_own_sid(clinic, twilio):
    rows = [
        queued(reachable(clinic, first_name=f"P{i}"), key=f"k{i}", kind=Kind.CONFIRMATION_REPLY)
        for i in range(5)
    ]
    ids = [r.pk for r in rows]
    assert messages_send(message_ids=ids) == dict.fromkeys(ids, Status.SENT)
    assert messages_send(message_ids=ids) == dict.fromkeys(ids, "skipped")  # delivered twice
    sids = {m.sid: m.to for m in twilio.messages}
    assert len(twilio.received) == 5
    for row in OutboundMessage.objects.filter(pk__in=ids):
        assert (row.status, row.attempts) == (Status.SENT, 1)
        assert sids[row.provider_id] == row.to  # its own message, not a neighbour's


@pytest.mark.django_db
def test_the_cap_counts_the_batchs_own_sends_as_if_one_by_one(clinic, twilio, mailoutbox):
    patient = reachable(clinic, first_name="Ana")
    sms = queued(patient, key="sms")
    email = queued(patient, key="email", channel="email")  # another group: same batch

    statuses = messages_send(message_ids=[sms.pk, email.pk], now=noon())

    assert sorted(statuses.values()) == [Status.SENT, Status.SUPPRESSED]
    held = OutboundMessage.objects.get(pk__in=statuses, status=Status.SUPPRESSED)
    assert held.reason == "Frequency cap: 1 message a day already sent"
    assert len(twilio.received) + len(mailoutbox) == 1


@pytest.mark.django_db
def test_a_row_whose_checks_fail_does_not_hold_back_the_others(clinic, twilio, monkeypatch):
    rows = [queued(reachable(clinic, first_name=f"P{i}"), key=f"k{i}") for i in range(3)]
    verdict = services._verdict

    def broken(message, now, **kwargs):
        if message.pk == rows[1].pk:
            raise LookupError("No template")
        return verdict(message, now, **kwargs)

    monkeypatch.setattr(services, "_verdict", broken)
    statuses = messages_send(message_ids=[r.pk for r in rows], now=noon())

    assert statuses == {
        rows[0].pk: Status.SENT,
        rows[1].pk: Status.SENDING,
        rows[2].pk: Status.SENT,
    }
    rows[1].refresh_from_db()
    assert rows[1].status == Status.SENDING  # as after a crash: reconciliation settles it
    assert len(twilio.received) == 2


@pytest.mark.django_db
def test_one_dispatcher_run_claims_everything_due_a_batch_per_task(
    clinic, settings, django_capture_on_commit_callbacks
):
    settings.REMINDERS_SEND_BATCH = 2
    rows = [
        queued(reachable(clinic, first_name=f"P{i}"), key=f"k{i}", kind=Kind.CONFIRMATION_REPLY)
        for i in range(7)
    ]
    OutboundMessage.objects.exclude(pk__in=[r.pk for r in rows]).delete()
    OutboundMessage.objects.update(status=Status.PLANNED)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        claimed = dispatch_due(claim_size=3)  # three claims of 3, 3 and 1 rows
    assert sorted(claimed) == sorted(r.pk for r in rows)
    assert [len(c.args[0]) for c in callbacks] == [2, 1, 2, 1, 1]
    assert set(OutboundMessage.objects.values_list("status", flat=True)) == {Status.QUEUED}


@pytest.mark.django_db
def test_one_run_still_holds_back_a_second_row_for_the_same_person_across_claims(clinic):
    patient = reachable(clinic, first_name="Ana")
    first, second = (queued(patient, key=f"k{i}") for i in range(2))
    OutboundMessage.objects.exclude(pk__in=[first.pk, second.pk]).delete()  # planning's own
    OutboundMessage.objects.update(status=Status.PLANNED)
    assert dispatch_due(claim_size=1) == [first.pk]
    second.refresh_from_db()
    assert second.status == Status.PLANNED  # for the next run, after the first went
