"""The local Twilio: the real SDK lists, fetches and is refused by it; it calls the app."""

import datetime as dt
import urllib.request
from urllib.parse import urlencode

import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from patients.models import Patient
from reminders.models import InboundMessage, OutboundMessage
from reminders.senders import SendError, TwilioSmsSender
from reminders.twilio_sim import TwilioSim, accept, error, lost_response
from tests.factories import OutboundMessageFactory

Status = OutboundMessage.Status
SID, TOKEN = "AC" + "0" * 32, "sim-token"
PRACTICE, PATIENT = "+15125550100", "+15125550142"


@pytest.fixture
def sim(settings):
    server = TwilioSim(account_sid=SID, auth_token=TOKEN).start()
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
    settings.TWILIO_API_BASE_URL = server.url
    settings.TWILIO_WEBHOOK_BASE_URL = ""
    yield server
    server.stop()


def client_for(sim: TwilioSim, token: str = TOKEN) -> Client:
    client = Client(SID, token)
    client.api.base_url = sim.url
    return client


def send(sim: TwilioSim, *, to: str = PATIENT, body: str = "Hi", **kwargs):
    sender = TwilioSmsSender(account_sid=SID, auth_token=TOKEN, api_base_url=sim.url)
    return sender.send(to=to, body=body, sender=kwargs.pop("sender", PRACTICE), **kwargs)


def test_it_lists_messages_by_to_from_and_date_sent_through_the_sdk(sim):
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    first = send(sim, body="First")
    send(sim, body="Other patient", to="+15125550199")
    send(sim, body="Other number", sender="+15125550111")
    client = client_for(sim)

    listed = client.messages.list(to=PATIENT, from_=PRACTICE, date_sent_after=before)
    assert [(m.sid, m.body) for m in listed] == [(first.provider_id, "First")]
    assert listed[0].status == "sent"  # the carrier's receipt comes with deliver()
    assert listed[0].date_sent >= before.replace(microsecond=0)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    assert client.messages.list(to=PATIENT, date_sent_after=later) == []
    assert len(client.messages.list(to=PATIENT, date_sent_before=later)) == 2
    # A bare date is a whole day (the SDK would write a date object as its midnight).
    assert len(client.messages.list(date_sent=f"{sim.messages[0].date_sent:%Y-%m-%d}")) == 3


def test_it_pages_like_twilio(sim):
    for n in range(5):
        send(sim, body=f"Message {n}")
    client = client_for(sim)
    page = client.messages.page(to=PATIENT, page_size=2)
    assert len(list(page)) == 2 and page.next_page_url
    # Newest first, and every message once across the pages.
    bodies = [m.body for m in client.messages.list(to=PATIENT, page_size=2)]
    assert bodies == [f"Message {n}" for n in reversed(range(5))]


def test_it_fetches_one_message_in_twilios_shape(sim):
    result = send(sim, body="Fetch me", status_callback="http://127.0.0.1:1/cb")
    sim.deliver()
    message = client_for(sim).messages(result.provider_id).fetch()
    assert (message.to, message.from_, message.body) == (PATIENT, PRACTICE, "Fetch me")
    assert message.status == "delivered"
    assert message.date_created.tzinfo is not None  # parsed from RFC 2822
    with pytest.raises(TwilioRestException) as raised:
        client_for(sim).messages("SM" + "f" * 32).fetch()
    assert (raised.value.status, raised.value.code) == (404, 20404)


def test_it_refuses_reads_with_the_wrong_credentials(sim):
    with pytest.raises(TwilioException, match="20003"):  # the SDK's paging error, not REST's
        client_for(sim, token="wrong").messages.list(to=PATIENT)


def test_it_answers_scripted_outcomes_one_request_each(sim):
    sim.script(error(400, 21610), error(429), error(503), accept())
    outcomes = []
    for _ in range(5):
        try:
            send(sim)
            outcomes.append("sent")
        except SendError as exc:
            outcomes.append((exc.code, exc.retryable))
    assert outcomes == [("21610", False), ("20429", True), ("20503", True), "sent", "sent"]
    assert len(sim.received) == 2


@pytest.mark.parametrize("code", [21211, 21614, 30006])
def test_it_refuses_with_twilios_error_codes(sim, code):
    sim.script(error(400, code))
    with pytest.raises(SendError) as raised:
        send(sim)
    assert (raised.value.code, raised.value.retryable) == (str(code), False)
    assert sim.messages == []


def test_a_lost_response_is_a_retryable_error_though_twilio_has_the_message(sim):
    sim.script(lost_response())
    with pytest.raises(SendError) as raised:
        send(sim, body="Did it go?")
    assert (raised.value.code, raised.value.retryable) == ("20500", True)
    (listed,) = client_for(sim).messages.list(to=PATIENT)
    assert listed.body == "Did it go?"


def test_receipts_wait_for_deliver_when_callbacks_are_off(sim):
    result = send(sim, status_callback="http://127.0.0.1:9/down")
    sim.script(accept(delivery="failed", error_code=30007))
    failed = send(sim)  # no callback asked for: only its status moves
    assert [(m.sid, s) for m, s in sim.pending] == [
        (result.provider_id, "sent"),
        (result.provider_id, "delivered"),
        (failed.provider_id, "failed"),
    ]
    assert sim.message(failed.provider_id).date_sent is None  # never left Twilio
    assert sim.deliver() == [0, 0]  # two callbacks, nobody listening
    assert sim.posted[1]["params"]["MessageStatus"] == "delivered"
    assert sim.pending == []
    assert (sim.message(failed.provider_id).status, sim.message(failed.provider_id).error_code) == (
        "failed",
        30007,
    )


# --- the app, served for real: signed callbacks and inbound SMS ---------------------------


@pytest.fixture
def sent_row(north_patient):
    return OutboundMessageFactory(patient=north_patient, status=Status.SENDING)


def send_row(sim: TwilioSim, row: OutboundMessage, live_server) -> str:
    """What the send path does: send with a status callback, then record the sid."""
    result = send(
        sim,
        to=row.to,
        body=row.body,
        status_callback=f"{live_server.url}/reminders/twilio/status/",
    )
    OutboundMessage.objects.filter(pk=row.pk).update(
        status=Status.SENT, provider_id=result.provider_id
    )
    return result.provider_id


@pytest.mark.django_db(transaction=True)
def test_signed_callbacks_move_the_apps_row_to_delivered(sim, sent_row, live_server):
    sid = send_row(sim, sent_row, live_server)
    assert sim.deliver() == [200, 200]
    sent_row.refresh_from_db()
    assert (sent_row.status, sent_row.provider_id) == (Status.DELIVERED, sid)
    assert sim.posted[0]["params"]["AccountSid"] == SID


@pytest.mark.django_db(transaction=True)
def test_a_scripted_undelivered_message_reaches_the_app_with_its_error_code(
    sim, sent_row, live_server
):
    sim.script(accept(delivery="undelivered", error_code=30003))
    sim.callbacks, sim.callback_delay = True, 0.5  # posted by themselves, as in `make run`
    send_row(sim, sent_row, live_server)
    sim.wait_for_callbacks()
    assert [p["status"] for p in sim.posted] == [200, 200]
    sent_row.refresh_from_db()
    # What the outbox then does about a handset that was off is the send path's policy.
    assert sent_row.status != Status.SENT and sent_row.error_code == "30003"


@pytest.mark.django_db(transaction=True)
def test_the_app_refuses_callbacks_signed_with_another_token(sim, sent_row, live_server, settings):
    send_row(sim, sent_row, live_server)
    settings.TWILIO_AUTH_TOKEN = "the-apps-real-token"
    assert sim.deliver() == [403, 403]
    sent_row.refresh_from_db()
    assert sent_row.status == Status.SENT


@pytest.mark.django_db(transaction=True)
def test_a_signed_inbound_stop_opts_the_patient_out(sim, north_patient, live_server):
    assert sim.send_inbound(live_server.url, north_patient.mobile_phone, PRACTICE, "STOP") == 200
    north_patient.refresh_from_db()
    assert north_patient.sms_opted_out_at is not None
    inbound = InboundMessage.objects.get()
    assert inbound.provider_id.startswith("SM") and inbound.action == "opt_out"


@pytest.mark.django_db(transaction=True)
def test_the_page_lists_messages_and_replies_as_the_patient(sim, north_patient, live_server):
    sim.app_url = live_server.url
    send(sim, to=north_patient.mobile_phone, body="See you <Tue> at 9:00 AM. Reply C.")
    with urllib.request.urlopen(f"{sim.url}/") as response:
        page = response.read().decode()
    assert "See you &lt;Tue&gt; at 9:00 AM. Reply C." in page
    assert f'name="From" value="{north_patient.mobile_phone}"' in page
    assert f'name="To" value="{PRACTICE}"' in page

    form = {"From": north_patient.mobile_phone, "To": PRACTICE, "Body": "Hello, running late"}
    with urllib.request.urlopen(f"{sim.url}/reply", data=urlencode(form).encode()) as response:
        after = response.read().decode()  # followed the redirect back to /
    assert "The app: HTTP 200" in after and "Hello, running late" in after
    inbound = InboundMessage.objects.get()
    assert (inbound.from_number, inbound.action) == (north_patient.mobile_phone, "inbox")
    assert Patient.objects.get(pk=north_patient.pk) in inbound.patients.all()
