"""How many reminders a second go out: dispatcher → Redis → Celery worker → Twilio.

Real parts end to end: PostgreSQL (DATABASE_URL), Redis (REDIS_URL), a
`celery -A practicecrm worker` process, and the twilio SDK talking to the local
Twilio server (reminders.twilio_sim) over HTTP. It loads N due appointment
reminders for N patients (one each, so the frequency cap holds none back), runs
the dispatcher once, and times until every row is sent — then checks the Twilio
server holds exactly N messages, one per idempotency key.

    make bench                         # N=2000, 4 worker processes
    BENCH_MESSAGES=5000 BENCH_CONCURRENCY=8 make bench

Run against a scratch database: the script creates its own tables (migrate) and
deletes every outbox row, patient and appointment of its own bench location.
"""

import datetime as dt
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "practicecrm.settings")


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in DATABASE_URL if it is not there yet."""
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


ensure_database(os.environ.get("DATABASE_URL", ""))
django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from locations.models import Location  # noqa: E402
from patients.models import Appointment, AppointmentType, ChannelConsent, Patient  # noqa: E402
from practicecrm.celery import app as celery_app  # noqa: E402
from reminders.models import OutboundMessage  # noqa: E402
from reminders.services import dispatch_due  # noqa: E402
from reminders.twilio_sim import TwilioSim  # noqa: E402

N = int(os.environ.get("BENCH_MESSAGES", "2000"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "4"))
SID, TOKEN = "AC" + "b" * 32, "bench-token"
QUEUE = "bench-dispatch"
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def load(location: Location, now: dt.datetime) -> None:
    """N patients, each with a visit in three days and its 2-day SMS reminder due now."""
    visit_type, _ = AppointmentType.objects.get_or_create(code="bench", defaults={"name": "Bench"})
    patients = Patient.objects.bulk_create(
        Patient(
            first_name=f"Bench{i}",
            last_name="Patient",
            date_of_birth=dt.date(1980, 1, 1),
            mobile_phone=f"+1555{i:07d}",
            home_location=location,
        )
        for i in range(N)
    )
    ChannelConsent.objects.bulk_create(
        ChannelConsent(patient=p, channel="sms", status="granted", method="verbal", recorded_at=now)
        for p in patients
    )
    start = now + dt.timedelta(days=3)
    visits = Appointment.objects.bulk_create(
        Appointment(
            patient=p,
            location=location,
            appointment_type=visit_type,
            start=start,
            end=start + dt.timedelta(minutes=30),
        )
        for p in patients
    )
    OutboundMessage.objects.bulk_create(
        (
            OutboundMessage(
                idempotency_key=f"bench:{visit.pk}",
                kind=OutboundMessage.Kind.APPOINTMENT_REMINDER,
                channel=OutboundMessage.Channel.SMS,
                step="2880m:sms",
                patient=patient,
                recipient=patient,
                location=location,
                appointment=visit,
                to=patient.mobile_phone,
                sender=location.sms_from_number,
                body=f"Bench Clinic: Hi {patient.first_name}, see you soon. Reply C to confirm.",
                scheduled_for=now - dt.timedelta(seconds=1),
            )
            for patient, visit in zip(patients, visits, strict=True)
        ),
        batch_size=1000,
    )


def main() -> None:
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        sys.exit("Set REDIS_URL (and DATABASE_URL): the benchmark measures the real broker.")
    call_command("migrate", verbosity=0)
    location, _ = Location.objects.update_or_create(
        slug="bench",
        defaults={
            "name": "Bench Clinic",
            "sms_from_number": "+15125550199",
            "module_appointment_reminders": True,
            # Open every day, all day: quiet hours are not what is measured.
            "business_hours": {d: ["00:00", "23:59"] for d in WEEK},
            "quiet_hours_start": dt.time(0),
            "quiet_hours_end": dt.time(23, 59, 59),
            "cap_per_day": 10,
            "cap_per_week": 10,
        },
    )
    Patient.objects.filter(home_location=location).delete()  # cascades to their rows
    OutboundMessage.objects.filter(location=location).delete()
    now = timezone.now()
    load(location, now)

    sim = TwilioSim(account_sid=SID, auth_token=TOKEN).start()
    env = {
        **os.environ,
        "PYTHONPATH": str(BASE_DIR),
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_API_BASE_URL": sim.url,
        "TWILIO_WEBHOOK_BASE_URL": "",
    }
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "practicecrm",
            "worker",
            f"--concurrency={CONCURRENCY}",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=WARNING",
            "-Q",
            QUEUE,
        ],
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,  # the banner; warnings and errors still show
        start_new_session=True,
    )
    try:
        celery_app.control.purge()
        time.sleep(3)  # let the worker connect before the clock starts
        celery_app.conf.task_routes = {"reminders.tasks.send_message": {"queue": QUEUE}}
        started = time.perf_counter()
        with transaction.atomic():
            claimed = dispatch_due(limit=N)
        dispatched = time.perf_counter() - started
        rows = OutboundMessage.objects.filter(location=location)
        deadline = started + 600
        while rows.filter(status__in=["queued", "sending"]).exists():
            if time.perf_counter() > deadline:
                sys.exit("Gave up after 10 minutes.")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(30)
        sim.stop()

    statuses = Counter(rows.values_list("status", flat=True))
    per_key = Counter(message["Body"] for message in sim.received)
    print(f"Dispatch benchmark: {N} SMS reminders, worker concurrency {CONCURRENCY}")
    print(f"  claimed by the dispatcher   {len(claimed)} rows in {dispatched * 1000:.0f} ms")
    print(f"  sent through Celery+Twilio  {elapsed:.1f} s  →  {N / elapsed:.0f} messages/s")
    print(f"  outbox statuses             {dict(statuses)}")
    print(
        f"  at the Twilio server        {len(sim.received)} messages, "
        f"{sum(1 for n in per_key.values() if n > 1)} bodies received more than once"
    )
    if statuses != Counter({"sent": N}) or len(sim.received) != N:
        sys.exit("FAILED: not exactly one message per row")


if __name__ == "__main__":
    main()
