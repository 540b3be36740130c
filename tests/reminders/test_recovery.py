"""Rows left "queued" by a lost send task go back to the dispatcher, and still go out once."""

import datetime as dt

import pytest
from django.utils import timezone

from reminders.models import OutboundMessage
from reminders.recovery import requeue_stale_queued
from reminders.services import dispatch_due, message_send

Status = OutboundMessage.Status
# A reply the practice owes the patient: sent whatever the consent, quiet hours and
# caps (tested with planning), so only the outbox's machinery decides what happens.
TRANSACTIONAL = OutboundMessage.Kind.CONFIRMATION_REPLY


def row(patient, *, key: str, status: str, queued_minutes_ago: int) -> OutboundMessage:
    message = OutboundMessage.objects.create(
        idempotency_key=key,
        kind=TRANSACTIONAL,
        channel=OutboundMessage.Channel.SMS,
        patient=patient,
        location=patient.home_location,
        to=patient.mobile_phone,
        sender="+15125550100",
        body=f"Reminder {key}",
        scheduled_for=timezone.now() - dt.timedelta(hours=1),
        status=status,
    )
    # auto_now would overwrite updated_at on save(); an UPDATE sets it as the claim did.
    OutboundMessage.objects.filter(pk=message.pk).update(
        updated_at=timezone.now() - dt.timedelta(minutes=queued_minutes_ago)
    )
    return message


@pytest.mark.django_db
def test_it_requeues_only_rows_queued_for_too_long(north_patient):
    stale = row(north_patient, key="stale", status=Status.QUEUED, queued_minutes_ago=30)
    fresh = row(north_patient, key="fresh", status=Status.QUEUED, queued_minutes_ago=1)
    sending = row(north_patient, key="sending", status=Status.SENDING, queued_minutes_ago=30)
    sent = row(north_patient, key="sent", status=Status.SENT, queued_minutes_ago=30)

    assert requeue_stale_queued(older_than=dt.timedelta(minutes=10)) == 1

    statuses = dict(OutboundMessage.objects.values_list("idempotency_key", "status"))
    assert statuses == {
        stale.idempotency_key: Status.PLANNED,
        fresh.idempotency_key: Status.QUEUED,
        sending.idempotency_key: Status.SENDING,
        sent.idempotency_key: Status.SENT,
    }
    # Due already, so the next dispatch claims it again.
    assert dispatch_due() == [stale.pk]


@pytest.mark.django_db
def test_the_lost_task_turning_up_late_cannot_send_twice(north_patient, settings):
    settings.TWILIO_ACCOUNT_SID = ""  # the console sender: nothing leaves the machine
    stale = row(north_patient, key="late", status=Status.QUEUED, queued_minutes_ago=30)
    assert requeue_stale_queued(older_than=dt.timedelta(minutes=10)) == 1

    # The "lost" task arrives after all, while the row is back in "planned": it skips.
    assert message_send(message_id=stale.pk) == "skipped"
    dispatch_due()
    # Now the old and the new task both try; only one claim queued → sending succeeds.
    assert message_send(message_id=stale.pk) == Status.SENT
    assert message_send(message_id=stale.pk) == "skipped"
    stale.refresh_from_db()
    assert (stale.status, stale.attempts) == (Status.SENT, 1)
