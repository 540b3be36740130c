"""The email sender end to end: Django's SMTP backend talking to a real local SMTP server.

aiosmtpd listens on a free port in this process; the mail it receives is parsed
back with the standard library, so what is checked is what a mail server saw.
"""

import datetime as dt
import email
import email.policy
import socket
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from reminders.models import OutboundMessage
from reminders.senders import SendError, send_email
from reminders.services import message_send

Status = OutboundMessage.Status
# A reply the practice owes the patient: sent whatever the consent, quiet hours and
# caps (tested with planning), so only the outbox's machinery decides what happens.
TRANSACTIONAL = OutboundMessage.Kind.CONFIRMATION_REPLY


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Mailbox:
    """aiosmtpd's handler: keeps every message it accepts, or answers `refuse_with`."""

    received: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    refuse_with: str = ""

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.refuse_with:
            return self.refuse_with
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


class LocalSmtp:
    """An aiosmtpd server on a free port of 127.0.0.1, stopped at most once."""

    def __init__(self) -> None:
        self.mailbox = Mailbox()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.controller.stop()
            self.running = False


def use_smtp(settings, port: int) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5


@pytest.fixture
def smtp_server(settings):
    server = LocalSmtp()
    use_smtp(settings, server.controller.port)
    yield server
    server.stop()


def send(**overrides):
    return send_email(
        **{
            "to": "zoe@example.test",
            "subject": "Your visit on Tue Mar 3",
            "text": "See you at 9:00 AM.",
            "html": "<p>See you at <b>9:00 AM</b>.</p>",
            "from_email": "Riverside Dental <austin@riverside.example>",
            **overrides,
        }
    )


def test_it_delivers_text_and_html_with_one_click_unsubscribe(smtp_server):
    mailbox = smtp_server.mailbox
    result = send(unsubscribe_url="https://crm.example.com/u/abc")

    ((mail_from, rcpt_tos, message),) = mailbox.received
    assert (mail_from, rcpt_tos) == ("austin@riverside.example", ["zoe@example.test"])
    assert message["From"] == "Riverside Dental <austin@riverside.example>"
    assert message["To"] == "zoe@example.test"
    assert message["Subject"] == "Your visit on Tue Mar 3"
    assert message["List-Unsubscribe"] == "<https://crm.example.com/u/abc>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The id the outbox stores is the one the mail carries (bounces quote it).
    assert message["Message-ID"] == result.provider_id
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(("plain",)).get_content().strip() == "See you at 9:00 AM."
    assert message.get_body(("html",)).get_content().strip() == "<p>See you at <b>9:00 AM</b>.</p>"


def test_it_sends_plain_text_alone_and_no_unsubscribe_headers_without_a_url(smtp_server):
    mailbox = smtp_server.mailbox
    send(html="")
    ((_, _, message),) = mailbox.received
    assert message.get_content_type() == "text/plain"
    assert "List-Unsubscribe" not in message
    assert "List-Unsubscribe-Post" not in message


def test_a_server_that_is_down_is_retryable(smtp_server):
    smtp_server.stop()  # nothing listens on the port any more: connection refused
    with pytest.raises(SendError) as raised:
        send()
    assert raised.value.retryable
    assert smtp_server.mailbox.received == []


def test_a_server_that_hangs_up_is_retryable(settings):
    # Accepts the connection and closes it before the greeting, as an overloaded
    # or restarting server does.
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    use_smtp(settings, listener.getsockname()[1])
    try:
        with pytest.raises(SendError) as raised:
            send()
    finally:
        thread.join(5)
        listener.close()
    assert raised.value.retryable


def test_a_temporary_refusal_is_retryable(smtp_server):
    mailbox = smtp_server.mailbox
    mailbox.refuse_with = "421 Service not available, closing transmission channel"
    with pytest.raises(SendError) as raised:
        send()
    assert raised.value.retryable
    assert mailbox.received == []


def test_a_permanent_refusal_is_final(smtp_server):
    mailbox = smtp_server.mailbox
    mailbox.refuse_with = "550 5.1.1 No such mailbox"
    with pytest.raises(SendError) as raised:
        send()
    assert (raised.value.retryable, raised.value.code) == (False, "550")


@pytest.mark.django_db
def test_the_outbox_sends_an_email_row_once(smtp_server, north_patient):
    mailbox = smtp_server.mailbox
    row = OutboundMessage.objects.create(
        idempotency_key="email-once",
        kind=TRANSACTIONAL,
        channel=OutboundMessage.Channel.EMAIL,
        patient=north_patient,
        location=north_patient.home_location,
        to="zoe@example.test",
        sender="North Clinic <north@clinic.example>",
        subject="Your visit tomorrow",
        body="See you tomorrow at 9:00 AM.",
        html_body="<p>See you tomorrow at 9:00 AM.</p>",
        scheduled_for=timezone.now() - dt.timedelta(minutes=1),
        status=Status.QUEUED,
    )

    assert message_send(message_id=row.pk) == Status.SENT
    assert message_send(message_id=row.pk) == "skipped"  # a second delivery of the task

    ((mail_from, rcpt_tos, message),) = mailbox.received
    assert (mail_from, rcpt_tos) == ("north@clinic.example", ["zoe@example.test"])
    assert message["Subject"] == "Your visit tomorrow"
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.SENT, 1)
    assert row.provider_id == message["Message-ID"]
    assert row.sent_at is not None
