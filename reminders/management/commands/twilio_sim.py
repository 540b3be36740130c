"""`manage.py twilio_sim`: a local Twilio for `make run`, with a page to reply as a patient.

The app's real twilio SDK talks to it (TWILIO_API_BASE_URL), it posts signed status
callbacks back, and its page at / lists the messages it took and sends a patient's
reply to the app's signed inbound webhook.
"""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from reminders.twilio_sim import DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, TwilioSim


class Command(BaseCommand):
    help = "Run a local server speaking Twilio's Messages API, with callbacks and a page."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8026)
        parser.add_argument(
            "--app-url",
            default=settings.TWILIO_WEBHOOK_BASE_URL or "http://127.0.0.1:8000",
            help="PracticeCRM's base URL, where inbound SMS are posted.",
        )
        parser.add_argument(
            "--no-callbacks", action="store_true", help="Do not post status callbacks."
        )

    def handle(self, *args, host: str, port: int, app_url: str, no_callbacks: bool, **options):
        # The app must sign and check with the same account: use its settings when set.
        sim = TwilioSim(
            account_sid=settings.TWILIO_ACCOUNT_SID or DEV_ACCOUNT_SID,
            auth_token=settings.TWILIO_AUTH_TOKEN or DEV_AUTH_TOKEN,
            callbacks=not no_callbacks,
            # Twilio's callbacks come seconds after the create, after the app saved the sid.
            callback_delay=1.0,
            app_url=app_url,
        ).start(host=host, port=port)
        self.stdout.write(f"Local Twilio on {sim.url}/ (account {sim.account_sid}, app {app_url})")
        # Started with `&` by `make serve`, the shell hands it SIGINT ignored: Ctrl-C
        # would leave it running (and `make serve` waiting for it). Stop on either.
        stopped = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *args: stopped.set())
        while not stopped.wait(1):
            pass
        sim.stop()
