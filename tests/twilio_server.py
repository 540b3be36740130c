"""A local HTTP server that speaks the part of Twilio's REST API PracticeCRM uses.

The twilio SDK is pointed at it (TWILIO_API_BASE_URL), so tests exercise the real
client library — request encoding, auth, response parsing, error mapping — with
no network. It checks HTTP Basic auth like Twilio does and answers as Twilio's
Messages API documents: 201 with the message resource, or an error body with
`code`, `message`, `more_info` and `status`.
"""

import base64
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

_MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC\w+)/Messages\.json$")


@dataclass
class TwilioServer:
    account_sid: str
    auth_token: str
    received: list[dict[str, str]] = field(default_factory=list)
    # Set to (http status, twilio error code, message) to make the next requests fail.
    fail_with: tuple[int, int, str] | None = None
    url: str = ""

    def start(self) -> "TwilioServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                match = _MESSAGES.match(self.path)
                if not match:
                    return self._reply(404, {"code": 20404, "message": "Not found", "status": 404})
                expected = base64.b64encode(
                    f"{server.account_sid}:{server.auth_token}".encode()
                ).decode()
                if self.headers.get("Authorization") != f"Basic {expected}" or (
                    match["sid"] != server.account_sid
                ):
                    return self._reply(
                        401, {"code": 20003, "message": "Authenticate", "status": 401}
                    )
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if server.fail_with:
                    status, code, message = server.fail_with
                    return self._reply(
                        status,
                        {
                            "code": code,
                            "message": message,
                            "status": status,
                            "more_info": f"https://www.twilio.com/docs/errors/{code}",
                        },
                    )
                if not form.get("To") or not (form.get("From") or form.get("MessagingServiceSid")):
                    return self._reply(
                        400,
                        {
                            "code": 21604,
                            "message": "A 'To' phone number is required.",
                            "status": 400,
                        },
                    )
                server.received.append(form)
                sid = "SM" + secrets.token_hex(16)
                self._reply(
                    201,
                    {
                        "sid": sid,
                        "account_sid": server.account_sid,
                        "to": form["To"],
                        "from": form.get("From"),
                        "messaging_service_sid": form.get("MessagingServiceSid"),
                        "body": form.get("Body", ""),
                        "status": "accepted" if form.get("MessagingServiceSid") else "queued",
                        "num_segments": "1",
                        "direction": "outbound-api",
                        "api_version": "2010-04-01",
                        "uri": f"/2010-04-01/Accounts/{server.account_sid}/Messages/{sid}.json",
                    },
                )

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
