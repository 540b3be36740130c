"""Twilio's status callback: signed, idempotent, never backwards."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone
from twilio.request_validator import RequestValidator

from reminders.models import OutboundMessage
from tests.reminders.test_outbox import message

Status = OutboundMessage.Status
TOKEN = "webhook-token"
URL = reverse("reminders:twilio_status")


@pytest.fixture(autouse=True)
def _twilio_token(settings):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.TWILIO_WEBHOOK_BASE_URL = ""


def signed_post(client, params: dict, *, url: str = f"http://testserver{URL}", token: str = TOKEN):
    signature = RequestValidator(token).compute_signature(url, params)
    return client.post(URL, params, HTTP_X_TWILIO_SIGNATURE=signature)


@pytest.fixture
def sent(north_patient):
    return message(north_patient, key="cb", status=Status.SENT, provider_id="SM" + "a" * 32)


def callback(sid: str, status: str, **extra) -> dict:
    return {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC" + "0" * 32, **extra}


@pytest.mark.django_db
def test_it_records_delivery_and_never_moves_back(client, sent):
    assert signed_post(client, callback(sent.provider_id, "delivered")).status_code == 200
    assert signed_post(client, callback(sent.provider_id, "sent")).status_code == 200
    sent.refresh_from_db()
    assert sent.status == Status.DELIVERED


@pytest.mark.django_db
def test_it_records_the_error_code_of_an_undelivered_message(client, sent):
    signed_post(client, callback(sent.provider_id, "undelivered", ErrorCode="30008"))
    sent.refresh_from_db()
    assert (sent.status, sent.error_code) == (Status.UNDELIVERED, "30008")
    assert sent.needs_attention


@pytest.mark.django_db
def test_an_unreachable_handset_is_tried_again_a_few_times_then_flagged(client, sent):
    signed_post(client, callback(sent.provider_id, "undelivered", ErrorCode="30003"))
    sent.refresh_from_db()
    assert (sent.status, sent.error_code, sent.provider_id) == (Status.PLANNED, "30003", "")
    assert sent.scheduled_for > timezone.now() + dt.timedelta(minutes=10)
    assert "trying again" in sent.reason
    # After the last allowed try, the next "undelivered" stays and asks for a person.
    OutboundMessage.objects.filter(pk=sent.pk).update(
        status=Status.SENT, provider_id="SMlast", attempts=3
    )
    signed_post(client, callback("SMlast", "undelivered", ErrorCode="30003"))
    sent.refresh_from_db()
    assert (sent.status, sent.needs_attention) == (Status.UNDELIVERED, True)


@pytest.mark.django_db
def test_a_carrier_filtered_message_alerts_staff_and_is_not_retried(client, sent):
    signed_post(client, callback(sent.provider_id, "undelivered", ErrorCode="30007"))
    sent.refresh_from_db()
    assert (sent.status, sent.needs_attention) == (Status.UNDELIVERED, True)
    assert "spam" in sent.reason


@pytest.mark.django_db
def test_it_refuses_a_forged_callback(client, sent):
    response = signed_post(client, callback(sent.provider_id, "failed"), token="not-the-token")
    assert response.status_code == 403
    unsigned = client.post(URL, callback(sent.provider_id, "failed"))
    assert unsigned.status_code == 403
    sent.refresh_from_db()
    assert sent.status == Status.SENT


@pytest.mark.django_db
def test_it_answers_200_for_a_message_it_does_not_know(client):
    assert signed_post(client, callback("SM" + "f" * 32, "delivered")).status_code == 200


@pytest.mark.django_db
def test_it_checks_the_signature_over_the_public_url_behind_a_proxy(client, sent, settings):
    settings.TWILIO_WEBHOOK_BASE_URL = "https://crm.example.com"
    public = f"https://crm.example.com{URL}"
    assert (
        signed_post(client, callback(sent.provider_id, "delivered"), url=public).status_code == 200
    )
    sent.refresh_from_db()
    assert sent.status == Status.DELIVERED


@pytest.mark.django_db
def test_it_refuses_everything_when_no_twilio_token_is_configured(client, sent, settings):
    settings.TWILIO_AUTH_TOKEN = ""
    signature = RequestValidator("").compute_signature(f"http://testserver{URL}", {})
    assert client.post(URL, {}, HTTP_X_TWILIO_SIGNATURE=signature).status_code == 403
