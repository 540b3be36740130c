"""The two ways a message leaves the building: SMS through Twilio, email over SMTP.

One small module, so that the reminder engine (issue #4) depends on `send_sms` and
`send_email` only. With no TWILIO_* settings the embedded run uses the console
SMS sender, which prints the message and sends nothing; email goes through
Django's backend chosen by EMAIL_URL (console by default, SMTP in production).
"""

import datetime as dt
import functools
import logging
import smtplib
import socket
import uuid
from collections.abc import Collection
from dataclasses import dataclass

import requests
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import make_msgid
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    """What the provider said: its id for the message and its first status."""

    provider_id: str
    status: str
    # When the provider handed it to the carrier, if it says (reconciliation does).
    sent_at: dt.datetime | None = None


class SendError(Exception):
    """The provider refused or could not be reached.

    `retryable` tells the engine whether to try again later (outage, rate limit)
    or to record the failure for good (invalid number, unsubscribed recipient).
    """

    def __init__(self, message: str, *, code: str = "", retryable: bool, ambiguous: bool = False):
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        # The request reached the provider but its answer did not (5xx, read timeout):
        # it may have been sent, so it must be reconciled before any resend.
        self.ambiguous = ambiguous


# Seconds; without one the SDK waits forever and a hung request outlives the worker's
# claim on the row (reconciliation would then resend what Twilio finally accepted).
TWILIO_TIMEOUT = 15
# The SDK logs every request's method, URL and headers at INFO, which the app's INFO
# root logger would print for each SMS: only its warnings are worth a line.
_sdk_logger = logging.getLogger(__name__ + ".twilio_sdk")
_sdk_logger.setLevel(logging.WARNING)


def _never_reached(exc: BaseException) -> bool:
    """True when the request certainly never reached the provider (refused, DNS)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, ConnectionRefusedError | socket.gaierror) or (
            type(chain).__name__ == "NewConnectionError"
        ):
            return True
        chain = (
            chain.__cause__
            or chain.__context__
            or (chain.args[0] if chain.args and isinstance(chain.args[0], BaseException) else None)
        )
    return False


class TwilioSmsSender:
    """Twilio's Messages API through the official SDK."""

    def __init__(self, *, account_sid: str, auth_token: str, api_base_url: str = ""):
        http = TwilioHttpClient(timeout=TWILIO_TIMEOUT, logger=_sdk_logger)
        # One keep-alive connection per concurrent send, reused from message to message
        # (the SDK pools only https, and only cpu_count + 4 of them).
        assert http.session is not None
        for scheme in ("http://", "https://"):
            http.session.mount(
                scheme, HTTPAdapter(pool_maxsize=max(settings.REMINDERS_SEND_CONCURRENCY, 10))
            )
        self.client = Client(account_sid, auth_token, http_client=http)
        if api_base_url:
            # Tests point the SDK at a local server that speaks Twilio's HTTP API.
            self.client.api.base_url = api_base_url

    def send(self, *, to: str, body: str, sender: str, status_callback: str = "") -> SendResult:
        """Send one SMS from a number (+1…) or a messaging service (MG…)."""
        identity = (
            {"messaging_service_sid": sender} if sender.startswith("MG") else {"from_": sender}
        )
        extra = {"status_callback": status_callback} if status_callback else {}
        try:
            message = self.client.messages.create(to=to, body=body, **identity, **extra)
        except TwilioRestException as exc:
            # 429 and 5xx are Twilio's trouble; any other 4xx is about this message.
            # A 5xx may come after Twilio queued the message: that one is ambiguous.
            retryable = exc.status == 429 or exc.status >= 500
            raise SendError(
                str(exc.msg),
                code=str(exc.code or exc.status),
                retryable=retryable,
                ambiguous=exc.status >= 500,
            ) from exc
        except (TwilioException, OSError) as exc:
            raise SendError(
                f"Twilio could not be reached: {exc}",
                retryable=True,
                ambiguous=not _never_reached(exc),
            ) from exc
        return SendResult(provider_id=message.sid, status=message.status)

    def find_sent(
        self,
        *,
        to: str,
        sender: str,
        body: str,
        since: dt.datetime,
        exclude: Collection[str] = (),
    ) -> SendResult | None:
        """The message Twilio holds with exactly this body to `to` from `sender`, if any.

        For a row whose send was interrupted: found means Twilio took it (do not
        send again), None means it never arrived (safe to send). Twilio's date
        filter is on the date *sent*, which a message still queued or accepted in
        Twilio's queue does not have yet — so the list is not date-filtered there;
        the creation time is compared here, and a queued message counts as found.
        Sids in `exclude` belong to other rows already.
        """
        service = sender.startswith("MG")
        filters = {"to": to}
        if not service:
            filters["from_"] = sender  # a service picks its own number: match its sid
        since = since.astimezone(dt.UTC)
        try:
            # Newest first from Twilio; one patient's number has few messages. Then
            # oldest first, so of two identical sends the first is this row's.
            recent = self.client.messages.list(**filters, page_size=100, limit=500)
            candidates = reversed([m for m in recent if m.date_created and m.date_created >= since])
            for message in candidates:
                if (
                    message.body == body
                    and message.sid not in exclude
                    and str(message.direction).startswith("outbound")
                    and (not service or message.messaging_service_sid == sender)
                ):
                    return SendResult(
                        provider_id=message.sid, status=message.status, sent_at=message.date_sent
                    )
        except TwilioRestException as exc:
            raise SendError(
                f"Twilio could not list messages: {exc.msg}",
                code=str(exc.code or exc.status),
                retryable=True,
            ) from exc
        except (TwilioException, OSError) as exc:
            raise SendError(f"Twilio could not be reached: {exc}", retryable=True) from exc
        return None


class ConsoleSmsSender:
    """The embedded run's SMS sender: logs the message; nothing leaves the machine."""

    def send(self, *, to: str, body: str, sender: str, status_callback: str = "") -> SendResult:
        logger.info("SMS (console, not sent) from %s to %s: %s", sender, to, body)
        return SendResult(provider_id=f"console-{uuid.uuid4().hex}", status="sent")

    def find_sent(
        self,
        *,
        to: str,
        sender: str,
        body: str,
        since: dt.datetime,
        exclude: Collection[str] = (),
    ) -> SendResult | None:
        # Nothing ever left the machine, so there is nothing to find: resending is safe.
        return None


def sms_sender() -> TwilioSmsSender | ConsoleSmsSender:
    """Twilio when TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are set, else the console."""
    if settings.TWILIO_ACCOUNT_SID and settings.TWILIO_AUTH_TOKEN:
        return _twilio_sender(
            settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, settings.TWILIO_API_BASE_URL
        )
    return ConsoleSmsSender()


@functools.lru_cache(maxsize=4)
def _twilio_sender(account_sid: str, auth_token: str, api_base_url: str) -> TwilioSmsSender:
    # One per process and account: building the SDK client and its session costs more
    # than a send, and a fresh one opens a new connection (and TLS handshake) each time.
    # Thread-safe: requests' session and urllib3's pool serve concurrent sends.
    return TwilioSmsSender(
        account_sid=account_sid, auth_token=auth_token, api_base_url=api_base_url
    )


def send_email(
    *, to: str, subject: str, text: str, from_email: str, html: str = "", unsubscribe_url: str = ""
) -> SendResult:
    """Send one email (plain text, plus HTML when given) through Django's backend.

    With an unsubscribe URL, List-Unsubscribe lets mail clients offer a one-click
    unsubscribe, which keeps the practice's domain off spam lists.
    """
    message_id = make_msgid()
    headers = {"Message-ID": message_id}
    if unsubscribe_url:
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=from_email or settings.DEFAULT_FROM_EMAIL,
        to=[to],
        headers=headers,
    )
    if html:
        message.attach_alternative(html, "text/html")
    try:
        message.send()
    except smtplib.SMTPResponseException as exc:
        # 4xx is "try later" (greylisting, busy); 5xx is final (no such mailbox).
        raise SendError(
            f"The mail server refused it: {exc.smtp_code} {exc.smtp_error!r}",
            code=str(exc.smtp_code),
            retryable=exc.smtp_code < 500,
        ) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise SendError(
            f"The mail server refused the address: {exc.recipients}",
            code=str(codes[0]) if codes else "",
            retryable=all(code < 500 for code in codes),
        ) from exc
    except OSError as exc:  # SMTP outage, refused connection, timeout
        raise SendError(f"The mail server could not be reached: {exc}", retryable=True) from exc
    return SendResult(provider_id=message_id, status="sent")
