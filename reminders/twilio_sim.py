"""A local HTTP server that speaks the part of Twilio's REST API PracticeCRM uses.

The twilio SDK is pointed at it (TWILIO_API_BASE_URL), so tests and `make run`
exercise the real client library — request encoding, auth, paging, response
parsing, error mapping — with no network and no Twilio account. Like Twilio it:

- checks HTTP Basic auth and answers 201 with the message resource, or an error
  body with `code`, `message`, `more_info` and `status`;
- lists (`To`, `From`, `DateSent`, `DateSent>`, `DateSent<`, `PageSize`, paged
  by `next_page_uri`) and fetches messages, dates in RFC 2822;
- POSTs signed status callbacks (sent, then delivered / undelivered / failed) to
  a message's StatusCallback, and signed inbound SMS to the app (`send_inbound`).

Tests script what the next create requests get with `script(...)`: `accept()`,
`error(status, code)` or `lost_response()` (recorded, yet answered 500 — the
ambiguous case where Twilio sent the SMS and the reply never arrived).
`manage.py twilio_sim` runs it in the foreground with a page to watch messages
and reply as a patient.
"""

import base64
import datetime as dt
import html
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from twilio.request_validator import RequestValidator

# What `make run` uses when no real Twilio account is configured. Not secrets: the
# simulator is the only thing that accepts them.
DEV_ACCOUNT_SID = "AC" + "0" * 32
DEV_AUTH_TOKEN = "dev-twilio-auth-token"

_API = "/2010-04-01/Accounts/(?P<sid>AC\\w+)/Messages"
_MESSAGES = re.compile(f"^{_API}\\.json$")
_MESSAGE = re.compile(f"^{_API}/(?P<message_sid>(SM|MM)\\w+)\\.json$")

# Twilio's wording for the errors tests script most; any other code gets a generic one.
ERROR_MESSAGES = {
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service Unavailable",
    21211: "The 'To' number is not a valid phone number.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
}


@dataclass(frozen=True)
class Outcome:
    """What one create request gets; build with accept(), error() or lost_response()."""

    http_status: int = 201
    code: int | None = None
    message: str = ""
    # Stored (and later "delivered") even though the answer is an error.
    record: bool = True
    # Where delivery ends: "delivered", "undelivered" or "failed" (+ ErrorCode), or
    # "sent" (the carrier has not confirmed yet).
    delivery: str = "delivered"
    delivery_error: int | None = None


def accept(*, delivery: str = "delivered", error_code: int | None = None) -> Outcome:
    """201; the message then ends as `delivery` (undelivered/failed with `error_code`)."""
    return Outcome(delivery=delivery, delivery_error=error_code)


def error(http_status: int, code: int | None = None, message: str = "") -> Outcome:
    """A refusal (400 + 21211…), a rate limit (429) or an outage (500/503); not stored."""
    code = code or {429: 20429, 500: 20500, 503: 20503}.get(http_status, 20001)
    return Outcome(
        http_status=http_status,
        code=code,
        message=message or ERROR_MESSAGES.get(code, "Error"),
        record=False,
    )


def lost_response() -> Outcome:
    """Twilio took the message and will send it, but the client sees a 500."""
    return Outcome(http_status=500, code=20500, message=ERROR_MESSAGES[20500], record=True)


def rfc2822(moment: dt.datetime) -> str:
    """Twilio's date format: 'Tue, 03 Mar 2026 14:00:00 +0000'."""
    return format_datetime(moment.astimezone(dt.UTC))


@dataclass
class SimMessage:
    """One message the simulator holds, outbound (created through the API) or inbound."""

    sid: str
    to: str
    from_: str | None
    body: str
    status: str
    direction: str = "outbound-api"
    messaging_service_sid: str | None = None
    date_created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    date_sent: dt.datetime | None = None
    error_code: int | None = None
    status_callback: str = ""
    # Every status it went through, in order.
    history: list[str] = field(default_factory=list)
    # The carrier's verdict still to come ("delivered", …), with its error code.
    outcome: str = ""
    outcome_error: int | None = None

    def move(self, status: str) -> bool:
        """Take a status it has not had yet; False if it already had it."""
        if status in self.history:
            return False
        self.history.append(status)
        self.status = status
        if status == "sent":
            self.date_sent = dt.datetime.now(dt.UTC)
        if status in ("undelivered", "failed"):
            self.error_code = self.outcome_error
        return True

    def resource(self, account_sid: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "api_version": "2010-04-01",
            "to": self.to,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "body": self.body,
            "status": self.status,
            "direction": self.direction,
            "num_segments": "1",
            "num_media": "0",
            "price": None,
            "price_unit": "USD",
            "error_code": self.error_code,
            "error_message": ERROR_MESSAGES.get(self.error_code) if self.error_code else None,
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.date_sent or self.date_created),
            "date_sent": rfc2822(self.date_sent) if self.date_sent else None,
            "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{self.sid}.json",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{account_sid}/Messages/{self.sid}/Media.json"
            },
        }


def _parse_filter_date(value: str) -> tuple[dt.datetime, bool]:
    """A DateSent filter value: (moment, whether it was a bare date, i.e. a whole day)."""
    if len(value) == 10:
        day = dt.date.fromisoformat(value)
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC), True
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC), False


def _sent_matches(sent: dt.datetime | None, query: dict[str, str]) -> bool:
    """Twilio's DateSent filters: exact (a day), `>` on or after, `<` on or before."""
    wanted = {k: query[k] for k in ("DateSent", "DateSent>", "DateSent<") if query.get(k)}
    if not wanted:
        return True
    if sent is None:  # not sent yet: no date to match
        return False
    sent = sent.replace(microsecond=0)
    for key, value in wanted.items():
        moment, whole_day = _parse_filter_date(value)
        end = moment + dt.timedelta(days=1) if whole_day else moment + dt.timedelta(seconds=1)
        if key == "DateSent" and not moment <= sent < end:
            return False
        if key == "DateSent>" and sent < moment:
            return False
        if key == "DateSent<" and sent >= end:
            return False
    return True


class _Server(ThreadingHTTPServer):
    # A worker pool opens its connections all at once; socketserver's listen backlog
    # of 5 would refuse some of them.
    request_queue_size = 128


@dataclass
class TwilioSim:
    account_sid: str
    auth_token: str
    # The form of every create request Twilio took, in order.
    received: list[dict[str, str]] = field(default_factory=list)
    messages: list[SimMessage] = field(default_factory=list)
    # Set to (http status, twilio error code, message) to make every create fail.
    fail_with: tuple[int, int, str] | None = None
    # Carrier receipts (the final status and every status callback) come by
    # themselves, `callback_delay` seconds apart; when off they wait in `pending`
    # until `deliver()`, so tests decide when.
    callbacks: bool = False
    callback_delay: float = 0.0
    # The app, for inbound SMS from the page ("Reply as a patient").
    app_url: str = ""
    url: str = ""
    # Every callback and inbound webhook posted: url, params, the app's HTTP status.
    posted: list[dict[str, Any]] = field(default_factory=list)
    pending: list[tuple[SimMessage, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._script: deque[Outcome] = deque()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # --- scripting, for tests ------------------------------------------------------

    def script(self, *outcomes: Outcome) -> None:
        """Queue what the next create requests get, one outcome per request."""
        with self._lock:
            self._script.extend(outcomes)

    def message(self, sid: str) -> SimMessage:
        with self._lock:
            return next(m for m in self.messages if m.sid == sid)

    # --- webhooks to the app -----------------------------------------------------------

    def _post_signed(self, url: str, params: dict[str, str]) -> int:
        """POST form params signed as Twilio does; returns the app's HTTP status (0: down)."""
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        request = urllib.request.Request(
            url,
            data=urlencode(params).encode(),
            headers={
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
                "User-Agent": "TwilioProxy/1.1 (practicecrm twilio_sim)",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        with self._lock:
            self.posted.append({"url": url, "params": params, "status": status})
        return status

    def deliver(self) -> list[int]:
        """Let the carrier finish what is pending: move each message to its final
        status and POST the status callbacks; returns the app's HTTP statuses."""
        with self._lock:
            pending, self.pending = self.pending, []
        answers = [self._step(message, status) for message, status in pending]
        return [answer for answer in answers if answer is not None]

    def wait_for_callbacks(self, timeout: float = 10) -> None:
        """Block until the callbacks posted in the background have been answered."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def send_inbound(self, app_url: str, from_: str, to: str, body: str) -> int:
        """A patient's SMS to the app's inbound webhook; returns the app's HTTP status."""
        sid = "SM" + secrets.token_hex(16)
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            self.messages.append(
                SimMessage(
                    sid=sid,
                    to=to,
                    from_=from_,
                    body=body,
                    status="received",
                    direction="inbound",
                    date_created=now,
                    date_sent=now,
                    history=["received"],
                )
            )
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "SmsMessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsStatus": "received",
            "ApiVersion": "2010-04-01",
        }
        return self._post_signed(f"{app_url.rstrip('/')}/reminders/twilio/inbound/", params)

    def _step(self, message: SimMessage, status: str) -> int | None:
        """Apply one status and POST its callback when the create asked for one."""
        with self._lock:
            message.move(status)
            params = {
                "MessageSid": message.sid,
                "SmsSid": message.sid,
                "MessageStatus": status,
                "SmsStatus": status,
                "AccountSid": self.account_sid,
                "To": message.to,
                "From": message.from_ or "",
                "ApiVersion": "2010-04-01",
            }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if status in ("undelivered", "failed") and message.error_code:
            params["ErrorCode"] = str(message.error_code)
        if not message.status_callback:
            return None
        return self._post_signed(message.status_callback, params)

    def _schedule(self, message: SimMessage) -> None:
        # "sent" has happened already (the create hands it to the carrier at once);
        # its callback still follows, then the carrier's verdict.
        steps = [s for s in message.history[1:] if s != message.outcome] + [message.outcome]
        if not self.callbacks:
            with self._lock:
                self.pending.extend((message, status) for status in steps)
            return

        def post_in_order() -> None:
            for status in steps:
                # Real callbacks come seconds after the create; the delay also lets the
                # app record the message's sid before hearing about it.
                time.sleep(self.callback_delay)
                self._step(message, status)

        thread = threading.Thread(target=post_in_order, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    # --- the API ----------------------------------------------------------------------

    def _create(self, form: dict[str, str]) -> tuple[int, dict[str, Any], SimMessage | None]:
        with self._lock:
            outcome = self._script.popleft() if self._script else accept()
        if self.fail_with:
            status, code, text = self.fail_with
            outcome = Outcome(http_status=status, code=code, message=text, record=False)
        if outcome.record and (
            not form.get("To") or not (form.get("From") or form.get("MessagingServiceSid"))
        ):
            outcome = Outcome(
                http_status=400,
                code=21604,
                message="A 'To' phone number is required.",
                record=False,
            )
        if not outcome.record:
            return outcome.http_status, self._error_body(outcome), None
        service = form.get("MessagingServiceSid")
        first = "accepted" if service else "queued"
        message = SimMessage(
            sid="SM" + secrets.token_hex(16),
            to=form["To"],
            from_=form.get("From"),
            body=form.get("Body", ""),
            status=first,
            messaging_service_sid=service,
            status_callback=form.get("StatusCallback", ""),
            history=[first],
        )
        answer = message.resource(self.account_sid)  # as created: queued, not yet sent
        # Handed to the carrier at once (a failure never leaves Twilio: no date sent);
        # the carrier's verdict comes later, see deliver().
        message.outcome, message.outcome_error = outcome.delivery, outcome.delivery_error
        if outcome.delivery != "failed":
            message.move("sent")
        with self._lock:
            self.received.append(form)
            self.messages.append(message)
        if outcome.http_status != 201:
            return outcome.http_status, self._error_body(outcome), message
        return 201, answer, message

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        page_size = min(max(int(query.get("PageSize") or 50), 1), 1000)
        page = int(query.get("Page") or 0)
        with self._lock:
            found = [
                m
                for m in self.messages
                if (not query.get("To") or m.to == query["To"])
                and (not query.get("From") or m.from_ == query["From"])
                and _sent_matches(m.date_sent, query)
            ]
        # Newest first, like Twilio.
        found.sort(key=lambda m: (m.date_sent or m.date_created, m.sid), reverse=True)
        rows = found[page * page_size : (page + 1) * page_size]
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        filters = {k: v for k, v in query.items() if k not in ("Page", "PageSize", "PageToken")}

        def uri(number: int) -> str:
            return f"{base}?{urlencode({**filters, 'PageSize': page_size, 'Page': number})}"

        more = (page + 1) * page_size < len(found)
        return {
            "messages": [m.resource(self.account_sid) for m in rows],
            "end": page * page_size + max(len(rows) - 1, 0),
            "first_page_uri": uri(0),
            "next_page_uri": (
                uri(page + 1) + f"&PageToken=PASM{rows[-1].sid}" if more and rows else None
            ),
            "page": page,
            "page_size": page_size,
            "previous_page_uri": uri(page - 1) if page else None,
            "start": page * page_size,
            "uri": uri(page),
        }

    @staticmethod
    def _error_body(outcome: Outcome) -> dict[str, Any]:
        return {
            "code": outcome.code,
            "message": outcome.message,
            "more_info": f"https://www.twilio.com/docs/errors/{outcome.code}",
            "status": outcome.http_status,
        }

    def _authorized(self, header: str | None, sid: str) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return header == f"Basic {expected}" and sid == self.account_sid

    # --- the page, for people ----------------------------------------------------------

    def page(self, *, notice: str = "") -> str:
        """The plain HTML page at /: messages received, and a reply form."""
        with self._lock:
            rows = sorted(self.messages, key=lambda m: m.date_created, reverse=True)
        latest = next((m for m in rows if m.direction != "inbound"), None)
        esc = html.escape
        lines = [
            f"<tr><td>{esc(m.date_created.strftime('%Y-%m-%d %H:%M:%S'))} UTC</td>"
            f"<td>{'in' if m.direction == 'inbound' else 'out'}</td>"
            f"<td>{esc(m.from_ or m.messaging_service_sid or '')}</td><td>{esc(m.to)}</td>"
            f"<td class=body>{esc(m.body)}</td>"
            f"<td>{esc(m.status)}{f' ({m.error_code})' if m.error_code else ''}</td></tr>"
            for m in rows
        ]
        table = (
            "<table><thead><tr><th>Time</th><th></th><th>From</th><th>To</th><th>Body</th>"
            "<th>Status</th></tr></thead><tbody>" + "".join(lines) + "</tbody></table>"
            if rows
            else "<p>No messages yet. Send one from PracticeCRM.</p>"
        )
        if self.app_url:
            reply = (
                '<form method="post" action="/reply"><h2>Reply as a patient</h2>'
                '<p><label for="from">From (the patient)</label>'
                f'<input id="from" name="From" value="{esc(latest.to if latest else "")}" '
                "required></p>"
                '<p><label for="to">To (the practice)</label>'
                f'<input id="to" name="To" value="{esc(latest.from_ or "" if latest else "")}" '
                "required></p>"
                '<p><label for="body">Body</label>'
                '<input id="body" name="Body" placeholder="C, STOP, START, HELP or anything" '
                "required></p>"
                f"<p><button>Send to {esc(self.app_url)}</button></p></form>"
            )
        else:
            reply = "<p>Start with an app URL (--app-url) to reply as a patient.</p>"
        notice_html = f'<p class="notice" role="status">{esc(notice)}</p>' if notice else ""
        return (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<title>Local Twilio</title><style>"
            "body{font:15px/1.4 system-ui,sans-serif;margin:2rem auto;max-width:60rem;"
            "padding:0 1rem;color:#222}"
            "table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .5rem;"
            "border-bottom:1px solid #ddd;vertical-align:top}td.body{white-space:pre-wrap}"
            "label{display:block;font-weight:600}input{width:100%;max-width:28rem;padding:.3rem}"
            "form{margin-top:2rem;padding:1rem;background:#f5f5f5}"
            ".notice{padding:.5rem;background:#eef6ee;border:1px solid #9c9}"
            "</style></head><body><h1>Local Twilio</h1>"
            f"<p>Account {esc(self.account_sid)} · API {esc(self.url)} · "
            '<a href="/">Refresh</a></p>'
            f"{notice_html}{table}{reply}</body></html>"
        )

    # --- serving -----------------------------------------------------------------------

    def start(self, *, host: str = "127.0.0.1", port: int = 0) -> "TwilioSim":
        sim = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as Twilio's API: a client reuses its connection from message to
            # message instead of a TCP handshake (and a server thread) per request. Every
            # answer carries a Content-Length, which HTTP/1.1 needs to find its end.
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes: without TCP_NODELAY the second waits
            # for the client's delayed ACK (40 ms) on a kept-alive connection.
            disable_nagle_algorithm = True

            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, status: int, body: dict | str, content_type: str = "") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _form(self) -> dict[str, str]:
                length = int(self.headers.get("Content-Length", 0))
                return {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}

            def _not_found(self) -> None:
                self._reply(
                    404,
                    {
                        "code": 20404,
                        "message": f"The requested resource {self.path} was not found",
                        "more_info": "https://www.twilio.com/docs/errors/20404",
                        "status": 404,
                    },
                )

            def _unauthorized(self, sid: str) -> bool:
                if sim._authorized(self.headers.get("Authorization"), sid):
                    return False
                self._reply(
                    401,
                    {
                        "code": 20003,
                        "message": "Authenticate",
                        "more_info": "https://www.twilio.com/docs/errors/20003",
                        "status": 401,
                    },
                )
                return True

            def do_GET(self):
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/":
                    return self._reply(
                        200, sim.page(notice=query.get("notice", "")), "text/html; charset=utf-8"
                    )
                if match := _MESSAGES.match(parts.path):
                    if self._unauthorized(match["sid"]):
                        return
                    return self._reply(200, sim._list(query))
                if match := _MESSAGE.match(parts.path):
                    if self._unauthorized(match["sid"]):
                        return
                    with sim._lock:
                        found = [m for m in sim.messages if m.sid == match["message_sid"]]
                    if not found:
                        return self._not_found()
                    return self._reply(200, found[0].resource(sim.account_sid))
                self._not_found()

            def do_POST(self):
                if self.path == "/reply" and sim.app_url:
                    form = self._form()
                    status = sim.send_inbound(
                        sim.app_url, form.get("From", ""), form.get("To", ""), form.get("Body", "")
                    )
                    said = f"HTTP {status}" if status else "no answer (is it running?)"
                    self.send_response(303)
                    self.send_header("Location", "/?" + urlencode({"notice": f"The app: {said}"}))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                match = _MESSAGES.match(self.path)
                if not match:
                    return self._not_found()
                if self._unauthorized(match["sid"]):
                    return
                status, body, message = sim._create(self._form())
                if message is not None:
                    # Before answering, so a test that hears the answer finds them pending.
                    sim._schedule(message)
                self._reply(status, body)

        self._http = _Server((host, port), Handler)
        self._http.daemon_threads = True
        self.url = f"http://{host}:{self._http.server_address[1]}"
        threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
