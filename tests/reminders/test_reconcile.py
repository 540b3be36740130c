"""Rows stuck in "sending" are settled by asking Twilio, never by resending blindly."""

import datetime as dt

import pytest
from django.utils import timezone

from reminders.models import OutboundMessage
from reminders.reconcile import reconcile_message, reconcile_stale_sending
from reminders.senders import ConsoleSmsSender, SendError, TwilioSmsSender
from reminders.tasks import reconcile_sending
from reminders.twilio_sim import TwilioSim, lost_response
from tests.factories import OutboundMessageFactory

Status = OutboundMessage.Status
SID, TOKEN = "AC" + "0" * 32, "reconcile-token"
SERVICE = "MG" + "1" * 32


@pytest.fixture
def sim(settings):
    server = TwilioSim(account_sid=SID, auth_token=TOKEN).start()
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
    settings.TWILIO_API_BASE_URL = server.url
    yield server
    server.stop()


def stuck(patient, *, minutes: int = 15, **kwargs) -> OutboundMessage:
    """A row a worker claimed `minutes` ago and never finished."""
    row = OutboundMessageFactory(patient=patient, status=Status.SENDING, attempts=1, **kwargs)
    then = timezone.now() - dt.timedelta(minutes=minutes)
    OutboundMessage.objects.filter(pk=row.pk).update(created_at=then, updated_at=then)
    row.refresh_from_db()
    return row


def twilio_took(sim: TwilioSim, row: OutboundMessage) -> str:
    """Twilio accepted the row's message; the worker died before recording it."""
    sender = TwilioSmsSender(account_sid=SID, auth_token=TOKEN, api_base_url=sim.url)
    return sender.send(to=row.to, body=row.body, sender=row.sender).provider_id


@pytest.mark.django_db
def test_a_stale_sms_twilio_has_is_recorded_with_its_sid_and_not_resent(sim, north_patient):
    row = stuck(north_patient)
    sid = twilio_took(sim, row)
    assert reconcile_stale_sending() == {"sent": 1}
    row.refresh_from_db()
    assert (row.status, row.provider_id, row.attempts) == (Status.SENT, sid, 1)
    assert row.sent_at is not None
    assert len(sim.received) == 1


@pytest.mark.django_db
def test_it_takes_twilios_final_status_whose_callbacks_were_dropped(sim, north_patient):
    row = stuck(north_patient)
    sim.script(lost_response())  # Twilio took it and will deliver; the app saw a 500
    with pytest.raises(SendError):
        twilio_took(sim, row)
    sim.deliver()  # the carrier's receipt came while the app had no sid
    assert reconcile_message(row) == Status.DELIVERED
    row.refresh_from_db()
    assert row.provider_id == sim.messages[0].sid


@pytest.mark.django_db
def test_a_stale_sms_twilio_never_got_is_planned_again_now(sim, north_patient):
    row = stuck(north_patient)
    assert reconcile_stale_sending() == {"planned": 1}
    row.refresh_from_db()
    assert row.status == Status.PLANNED
    assert row.scheduled_for <= timezone.now()
    assert row.error_message == "Reconciled: provider had no record; resending"
    assert sim.received == []  # planned for the dispatcher; nothing sent from here


@pytest.mark.django_db
def test_it_matches_the_exact_body_and_a_messaging_services_own_messages(sim, north_patient):
    by_service = stuck(north_patient, sender=SERVICE)
    twilio_took(sim, by_service)
    sim.deliver()
    other_body = stuck(north_patient, body="North Clinic: something else")
    sender = TwilioSmsSender(account_sid=SID, auth_token=TOKEN, api_base_url=sim.url)
    sender.send(to=other_body.to, body=other_body.body + "!", sender=other_body.sender)

    assert reconcile_stale_sending() == {"delivered": 1, "planned": 1}
    by_service.refresh_from_db()
    other_body.refresh_from_db()
    assert by_service.provider_id == sim.messages[0].sid
    assert other_body.status == Status.PLANNED


@pytest.mark.django_db
def test_two_identical_stuck_rows_do_not_claim_one_message(sim, north_patient):
    # Two rows with the same words (say, two HELP replies) both died mid-send; one got out.
    sid = twilio_took(sim, stuck(north_patient, body="Same words"))
    stuck(north_patient, body="Same words")
    assert reconcile_stale_sending() == {"sent": 1, "planned": 1}
    assert OutboundMessage.objects.filter(provider_id=sid).count() == 1


@pytest.mark.django_db
def test_a_stale_email_fails_and_is_never_resent(sim, north_patient):
    row = stuck(north_patient, channel="email", to="zoe@example.test", sender="north@example.test")
    assert reconcile_sending() == {"failed": 1}
    row.refresh_from_db()
    assert row.status == Status.FAILED
    assert row.error_message == "Unknown whether the mail server accepted it; not resent"


@pytest.mark.django_db
def test_a_fresh_sending_row_is_left_alone(sim, north_patient):
    row = stuck(north_patient, minutes=2)
    assert reconcile_stale_sending() == {}
    row.refresh_from_db()
    assert row.status == Status.SENDING


@pytest.mark.django_db
def test_an_unreachable_twilio_leaves_the_row_to_ask_again(sim, north_patient):
    row = stuck(north_patient)
    sim.stop()
    assert reconcile_stale_sending() == {"sending": 1}
    row.refresh_from_db()
    assert row.status == Status.SENDING
    sim.start()  # for the fixture's stop()


@pytest.mark.django_db
def test_a_row_that_moved_on_meanwhile_is_skipped(sim, north_patient):
    row = stuck(north_patient)
    OutboundMessage.objects.filter(pk=row.pk).update(status=Status.SENT)
    assert reconcile_message(row) == "skipped"


@pytest.mark.django_db
def test_without_twilio_the_console_sender_finds_nothing_so_the_row_is_resent(
    settings, north_patient
):
    settings.TWILIO_ACCOUNT_SID = ""
    console = ConsoleSmsSender()
    assert console.find_sent(to="+1", sender="+1", body="x", since=timezone.now()) is None
    row = stuck(north_patient)
    assert reconcile_message(row) == Status.PLANNED
