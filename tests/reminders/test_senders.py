"""The SMS sender against a local Twilio API with the real twilio SDK; email via Django."""

import pytest
from django.core import mail

from reminders.senders import (
    ConsoleSmsSender,
    SendError,
    TwilioSmsSender,
    send_email,
    sms_sender,
)
from tests.twilio_server import TwilioServer

SID = "AC" + "0" * 32
TOKEN = "test-auth-token"


@pytest.fixture
def twilio():
    server = TwilioServer(account_sid=SID, auth_token=TOKEN).start()
    yield server
    server.stop()


def sender_for(server: TwilioServer, token: str = TOKEN) -> TwilioSmsSender:
    return TwilioSmsSender(account_sid=SID, auth_token=token, api_base_url=server.url)


def test_it_sends_an_sms_from_a_number_with_a_status_callback(twilio):
    result = sender_for(twilio).send(
        to="+15125550142",
        body="Riverside Dental: see you Tue Mar 3 at 9:00 AM. Reply C to confirm.",
        sender="+15125550100",
        status_callback="https://crm.example.com/reminders/twilio/status",
    )
    assert result.provider_id.startswith("SM") and result.status == "queued"
    assert twilio.received == [
        {
            "To": "+15125550142",
            "From": "+15125550100",
            "Body": "Riverside Dental: see you Tue Mar 3 at 9:00 AM. Reply C to confirm.",
            "StatusCallback": "https://crm.example.com/reminders/twilio/status",
        }
    ]


def test_it_sends_through_a_messaging_service(twilio):
    result = sender_for(twilio).send(to="+15125550142", body="Hi", sender="MG" + "1" * 32)
    assert result.status == "accepted"
    assert twilio.received[0]["MessagingServiceSid"] == "MG" + "1" * 32
    assert "From" not in twilio.received[0]


def test_it_reports_an_invalid_number_as_final(twilio):
    twilio.fail_with = (400, 21211, "The 'To' number +15005550001 is not a valid phone number.")
    with pytest.raises(SendError) as raised:
        sender_for(twilio).send(to="+15005550001", body="Hi", sender="+15125550100")
    assert (raised.value.code, raised.value.retryable) == ("21211", False)
    assert "not a valid phone number" in str(raised.value)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_it_reports_rate_limits_and_outages_as_retryable(twilio, status):
    twilio.fail_with = (status, 20429 if status == 429 else 20500, "Try later")
    with pytest.raises(SendError) as raised:
        sender_for(twilio).send(to="+15125550142", body="Hi", sender="+15125550100")
    assert raised.value.retryable


def test_it_reports_bad_credentials_as_final(twilio):
    with pytest.raises(SendError) as raised:
        sender_for(twilio, token="wrong").send(to="+15125550142", body="Hi", sender="+15125550100")
    assert (raised.value.code, raised.value.retryable) == ("20003", False)
    assert twilio.received == []


def test_it_reports_an_unreachable_twilio_as_retryable(twilio):
    twilio.stop()
    with pytest.raises(SendError) as raised:
        sender_for(twilio).send(to="+15125550142", body="Hi", sender="+15125550100")
    assert raised.value.retryable
    twilio.start()  # for the fixture's stop()


def test_it_picks_the_console_sender_without_twilio_settings(settings):
    settings.TWILIO_ACCOUNT_SID = ""
    assert isinstance(sms_sender(), ConsoleSmsSender)
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
    assert isinstance(sms_sender(), TwilioSmsSender)


def test_the_console_sender_sends_nothing_and_says_so(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="reminders.senders"):
        result = ConsoleSmsSender().send(to="+15125550142", body="Hi", sender="+15125550100")
    assert result.provider_id.startswith("console-")
    assert "not sent" in caplog.text


def test_it_sends_email_with_text_html_and_list_unsubscribe(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    result = send_email(
        to="zoe@example.test",
        subject="Your visit on Tue Mar 3",
        text="See you at 9:00 AM.",
        html="<p>See you at 9:00 AM.</p>",
        from_email="Riverside Dental <austin@riverside.example>",
        unsubscribe_url="https://crm.example.com/u/abc",
    )
    (sent,) = mail.outbox
    assert sent.to == ["zoe@example.test"]
    assert sent.alternatives[0][1] == "text/html"
    assert sent.extra_headers["List-Unsubscribe"] == "<https://crm.example.com/u/abc>"
    assert sent.extra_headers["Message-ID"] == result.provider_id


def test_it_reports_an_unreachable_mail_server_as_retryable(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 1, 2
    with pytest.raises(SendError) as raised:
        send_email(
            to="zoe@example.test",
            subject="s",
            text="t",
            html="<p>t</p>",
            from_email="a@example.test",
            unsubscribe_url="https://x.example/u",
        )
    assert raised.value.retryable


def test_it_sends_plain_email_without_an_empty_unsubscribe_header(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    send_email(to="zoe@example.test", subject="s", text="t", from_email="a@example.test")
    (sent,) = mail.outbox
    assert "List-Unsubscribe" not in sent.extra_headers
    assert sent.alternatives == []
