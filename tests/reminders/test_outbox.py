"""The outbox engine's exactly-once core: claiming due rows and sending each once."""

import datetime as dt
import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from reminders.models import OutboundMessage
from reminders.services import dispatch_due, message_send
from tests.factories import PatientFactory
from tests.twilio_server import TwilioServer

Status = OutboundMessage.Status
SID, TOKEN = "AC" + "0" * 32, "outbox-token"


@pytest.fixture
def twilio(settings):
    server = TwilioServer(account_sid=SID, auth_token=TOKEN).start()
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
    settings.TWILIO_API_BASE_URL = server.url
    yield server
    server.stop()


def message(patient, *, key: str, minutes_ago: int = 1, status=Status.PLANNED, **kwargs):
    # A reply to the patient's text: the send-time checks of reminders (consent,
    # quiet hours, cap) have their own tests in test_planning / test_send_checks.
    return OutboundMessage.objects.create(
        idempotency_key=key,
        kind=OutboundMessage.Kind.CONFIRMATION_REPLY,
        channel=OutboundMessage.Channel.SMS,
        patient=patient,
        location=patient.home_location,
        to=patient.mobile_phone,
        sender="+15125550100",
        body="North Clinic: see you tomorrow at 9:00 AM. Reply C to confirm.",
        scheduled_for=timezone.now() - dt.timedelta(minutes=minutes_ago),
        status=status,
        **kwargs,
    )


@pytest.mark.django_db
def test_it_claims_only_due_planned_rows_and_queues_after_commit(
    north_patient, django_capture_on_commit_callbacks
):
    due = message(north_patient, key="due")
    message(north_patient, key="later", minutes_ago=-30)
    message(north_patient, key="done", status=Status.SENT)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        claimed = dispatch_due()
    assert claimed == [due.pk]
    assert len(callbacks) == 1  # the send is enqueued only once the claim commits
    due.refresh_from_db()
    assert due.status == Status.QUEUED


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_never_claim_the_same_row(north_patient):
    rows = [message(north_patient, key=f"k{i}") for i in range(6)]
    locked, release = threading.Event(), threading.Event()
    held: list[int] = []

    def other_dispatcher():
        # Holds the first three rows locked, as a dispatcher mid-claim would.
        with transaction.atomic():
            held.extend(
                OutboundMessage.objects.select_for_update()
                .filter(pk__in=[r.pk for r in rows[:3]])
                .values_list("pk", flat=True)
            )
            locked.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=other_dispatcher)
    thread.start()
    locked.wait(10)
    try:
        claimed = dispatch_due()
    finally:
        release.set()
        thread.join()
    assert sorted(claimed) == sorted(r.pk for r in rows[3:])
    assert not set(claimed) & set(held)


@pytest.mark.django_db
def test_a_send_delivered_twice_reaches_the_patient_once(north_patient, twilio):
    row = message(north_patient, key="twice", status=Status.QUEUED)
    assert message_send(message_id=row.pk) == Status.SENT
    assert message_send(message_id=row.pk) == "skipped"
    assert len(twilio.received) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.SENT, 1)
    assert row.provider_id.startswith("SM")


@pytest.mark.django_db
def test_shadow_mode_records_the_message_and_sends_nothing(north_patient, twilio):
    north_patient.home_location.shadow_mode = True
    north_patient.home_location.save()
    row = message(north_patient, key="shadow", status=Status.QUEUED)
    assert message_send(message_id=row.pk) == Status.SHADOW
    assert twilio.received == []


@pytest.mark.django_db
def test_an_outage_plans_a_retry_later_and_a_refusal_fails(north_patient, twilio, settings):
    # Nothing listening: the request never reached Twilio, so a retry is safe.
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"
    row = message(north_patient, key="outage", status=Status.QUEUED)
    assert message_send(message_id=row.pk) == Status.PLANNED
    row.refresh_from_db()
    assert row.scheduled_for > timezone.now()
    assert row.attempts == 1
    settings.TWILIO_API_BASE_URL = twilio.url

    twilio.fail_with = (400, 21211, "The 'To' number is not a valid phone number.")
    other = message(
        PatientFactory(home_location=north_patient.home_location), key="bad", status=Status.QUEUED
    )
    assert message_send(message_id=other.pk) == Status.FAILED
    other.refresh_from_db()
    assert other.error_code == "21211"


@pytest.mark.django_db
def test_the_idempotency_key_is_unique_in_the_database(north_patient):
    from django.db import IntegrityError

    message(north_patient, key="once")
    with pytest.raises(IntegrityError):
        message(north_patient, key="once")
