"""How many reminders a second go out: dispatcher → Redis → Celery workers → Twilio.

Real parts end to end: PostgreSQL (DATABASE_URL), Redis (REDIS_URL), `celery -A
practicecrm worker` processes, and the twilio SDK talking to the local Twilio
server (`manage.py twilio_sim`, its own process) over HTTP. It loads N due
appointment reminders for N patients (one each, so the frequency cap holds none
back), publishes `reminders.tasks.dispatch_reminders` — the task beat's
"dispatch-reminders" entry publishes every minute — to the worker, which claims
every due row and queues the batch sends, and times until every row is sent.

Beside it, in the same run, the limit: the same Twilio server's own throughput
for the same create request from a plain HTTP client (http.client keep-alive
connections, one per thread) at the same concurrency. And exactly-once: the
server holds N messages, to N distinct numbers, each the sid of exactly one row.

    make bench                                  # N=20,000; 2 worker processes × 8 sends
    BENCH_MESSAGES=2000 BENCH_CONCURRENCY=2 BENCH_SEND_CONCURRENCY=8 python benchmarks/dispatch.py

Run against a scratch database: the script creates its own tables (migrate) and
deletes every outbox row, patient and appointment of its own bench location.
It purges the Celery queue of REDIS_URL's database: give it one of its own.
"""

import base64
import datetime as dt
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import django

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "practicecrm.settings")


from benchmarks.common import ensure_database  # noqa: E402

ensure_database(os.environ.get("DATABASE_URL", ""))
django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402
from twilio.http.http_client import TwilioHttpClient  # noqa: E402
from twilio.rest import Client  # noqa: E402

from benchmarks.results import Figure  # noqa: E402
from locations.models import Location  # noqa: E402
from patients.models import Appointment, AppointmentType, ChannelConsent, Patient  # noqa: E402
from practicecrm.celery import app as celery_app  # noqa: E402
from reminders.models import OutboundMessage  # noqa: E402
from reminders.services import dispatch_due, message_send, messages_send  # noqa: E402
from reminders.tasks import dispatch_reminders  # noqa: E402
from reminders.templating import render  # noqa: E402

N = int(os.environ.get("BENCH_MESSAGES", "20000"))
# Worker processes (prefork) × sends in flight per process = requests in flight.
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "2"))
SEND_CONCURRENCY = int(
    os.environ.get("BENCH_SEND_CONCURRENCY", str(settings.REMINDERS_SEND_CONCURRENCY))
)
SID, TOKEN = "AC" + "b" * 32, "bench-token"
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TARGET = 500  # messages/s, issue #7
# Rows for the in-process query count, apart from the timed ones.
PROBE = settings.REMINDERS_SEND_BATCH


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SimProcess:
    """`manage.py twilio_sim` in its own process, as `make run` runs it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN}
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "twilio_sim", "--port", str(self.port), "--no-callbacks"],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the local Twilio server did not start") from None
                time.sleep(0.1)

    def messages(self) -> list:
        """Every message it holds, through its list API (paged), as the SDK reads them."""
        quiet = logging.getLogger("benchmarks.twilio_sdk")
        quiet.setLevel(logging.WARNING)  # not every request's headers at INFO
        client = Client(SID, TOKEN, http_client=TwilioHttpClient(logger=quiet))
        client.api.base_url = self.url
        return client.messages.list(page_size=1000)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process and its descendants have used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        children = " ".join(
            path.read_text() for path in Path(f"/proc/{pid}/task").glob("*/children")
        ).split()
    except OSError:
        return 0.0  # gone
    own = (int(fields[11]) + int(fields[12])) / TICK
    return own + sum(cpu_seconds(int(child)) for child in children)


def postgres_cpu() -> dict[int, float]:
    """CPU time of each PostgreSQL backend serving this database, but ours."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return {pid: cpu_seconds(pid) for (pid,) in cursor.fetchall()}


def http_limit(sim: SimProcess, *, requests: int, concurrency: int) -> float:
    """Creates/s the server answers to a plain HTTP client at `concurrency` in flight."""
    path = f"/2010-04-01/Accounts/{SID}/Messages.json"
    auth = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    headers = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> int:
        conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=30)
        done = 0
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                conn.close()
                return done
            form = urlencode(
                {
                    "To": f"+1666{i:07d}",
                    "From": "+15125550199",
                    "Body": f"Bench Clinic: Hi Bench{i}, see you soon. Reply C to confirm.",
                }
            )
            conn.request("POST", path, body=form, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 201, response.status
            done += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        total = sum(pool.map(lambda _: client(), range(concurrency)))
    return total / (time.perf_counter() - started)


def clean(location: Location) -> None:
    """Delete the bench location's patients and everything of theirs (plain SQL: fast)."""
    patients = "SELECT id FROM patients_patient WHERE home_location_id = %s"
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM reminders_outboundmessage "
            f"WHERE location_id = %s OR patient_id IN ({patients})",
            [location.pk, location.pk],
        )
        for table in ("patients_channelconsent", "patients_appointment"):
            cursor.execute(f"DELETE FROM {table} WHERE patient_id IN ({patients})", [location.pk])
        cursor.execute("DELETE FROM patients_patient WHERE home_location_id = %s", [location.pk])


def load(location: Location, now: dt.datetime, count: int, *, first: int = 0) -> None:
    """`count` patients, each with a visit in three days and its 2-day SMS reminder due now."""
    visit_type, _ = AppointmentType.objects.get_or_create(code="bench", defaults={"name": "Bench"})
    patients = Patient.objects.bulk_create(
        (
            Patient(
                first_name=f"Bench{i}",
                last_name="Patient",
                date_of_birth=dt.date(1980, 1, 1),
                mobile_phone=f"+1555{i:07d}",
                home_location=location,
            )
            for i in range(first, first + count)
        ),
        batch_size=2000,
    )
    ChannelConsent.objects.bulk_create(
        (
            ChannelConsent(
                patient=p, channel="sms", status="granted", method="verbal", recorded_at=now
            )
            for p in patients
        ),
        batch_size=2000,
    )
    start = now + dt.timedelta(days=3)
    visits = Appointment.objects.bulk_create(
        (
            Appointment(
                patient=p,
                location=location,
                appointment_type=visit_type,
                start=start,
                end=start + dt.timedelta(minutes=30),
            )
            for p in patients
        ),
        batch_size=2000,
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
                # The words planning writes; the send renders them again and finds them
                # unchanged, as it does unless a template or a name changed meanwhile.
                body=render(
                    kind=OutboundMessage.Kind.APPOINTMENT_REMINDER,
                    channel=OutboundMessage.Channel.SMS,
                    language=patient.language,
                    location=location,
                    first_name=patient.first_name,
                    when=visit.start,
                ).body,
                scheduled_for=now - dt.timedelta(seconds=1),
            )
            for patient, visit in zip(patients, visits, strict=True)
        ),
        batch_size=2000,
    )


def bench_location() -> Location:
    location, _ = Location.objects.update_or_create(
        slug="bench",
        defaults={
            "name": "Bench Clinic",
            "sms_from_number": "+15125550199",
            "module_appointment_reminders": True,
            # Open every day, all day: quiet hours are not what is measured. Household
            # grouping stays on (the default): its look-up is part of every send.
            "business_hours": {d: ["00:00", "23:59"] for d in WEEK},
            "quiet_hours_start": dt.time(0),
            "quiet_hours_end": dt.time(23, 59, 59),
            "cap_per_day": 10,
            "cap_per_week": 10,
        },
    )
    return location


def status_counts(location: Location) -> Counter:
    return Counter(
        dict(
            OutboundMessage.objects.filter(location=location)
            .order_by()
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
    )


def queries_per_message(location: Location, sim: SimProcess) -> tuple[float, float, float]:
    """SQL statements per message: (dispatcher, batch send, single send), counted in process."""
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
    settings.TWILIO_API_BASE_URL, settings.TWILIO_WEBHOOK_BASE_URL = sim.url, ""
    now = timezone.now()
    load(location, now, PROBE + 1, first=N)
    rows = list(
        OutboundMessage.objects.filter(location=location, status="planned")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    OutboundMessage.objects.filter(pk__in=rows[PROBE:]).update(status="queued")
    with CaptureQueriesContext(connection) as dispatched:
        ids = dispatch_due(now=now, limit=PROBE)  # (queues its sends in this process)
    celery_app.control.purge()
    with CaptureQueriesContext(connection) as batch:
        statuses = messages_send(message_ids=ids)
    assert Counter(statuses.values()) == {"sent": PROBE}, statuses
    with CaptureQueriesContext(connection) as single:
        assert message_send(message_id=rows[PROBE]) == "sent"
    return len(dispatched) / PROBE, len(batch) / PROBE, float(len(single))


def run() -> list[Figure]:
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        sys.exit("Set REDIS_URL (and DATABASE_URL): the benchmark measures the real broker.")
    call_command("migrate", verbosity=0)
    location = bench_location()
    clean(location)
    load(location, timezone.now(), N)
    in_flight = CONCURRENCY * SEND_CONCURRENCY

    # The limit first, on a server of its own: the same create, no PracticeCRM.
    sim = SimProcess()
    try:
        http_limit(sim, requests=min(N, 500), concurrency=in_flight)  # warm up
        cpu = cpu_seconds(sim.process.pid), time.process_time()
        limit = http_limit(sim, requests=N, concurrency=in_flight)
        limit_cpu = (cpu_seconds(sim.process.pid) - cpu[0], time.process_time() - cpu[1])
    finally:
        sim.stop()

    sim = SimProcess()
    env = {
        **os.environ,
        "PYTHONPATH": str(BASE_DIR),
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_API_BASE_URL": sim.url,
        "TWILIO_WEBHOOK_BASE_URL": "",
        "REMINDERS_SEND_CONCURRENCY": str(SEND_CONCURRENCY),
    }
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "practicecrm",
            "worker",
            "--pool=prefork",
            f"--concurrency={CONCURRENCY}",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=WARNING",
        ],
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,  # the banner; warnings and errors still show
        start_new_session=True,
    )
    try:
        celery_app.control.purge()
        time.sleep(4)  # let the worker connect before the clock starts
        cpu_before = cpu_seconds(worker.pid), cpu_seconds(sim.process.pid), postgres_cpu()
        # What beat does every minute: publish the dispatcher task to the broker.
        published = time.perf_counter()
        dispatch_reminders.apply_async()
        first_claim = all_claimed = None
        deadline = published + 900
        while True:
            counts = status_counts(location)
            now = time.perf_counter()
            if first_claim is None and counts["planned"] < N:
                first_claim = now
            if all_claimed is None and counts["planned"] == 0:
                all_claimed = now
            if not (counts["planned"] or counts["queued"] or counts["sending"]):
                break
            if now > deadline:
                sys.exit(f"Gave up after 15 minutes: {dict(counts)}")
            time.sleep(0.1)
        drained = time.perf_counter()
        pg_after = postgres_cpu()
        cpu_used = (
            cpu_seconds(worker.pid) - cpu_before[0],
            cpu_seconds(sim.process.pid) - cpu_before[1],
            sum(t - cpu_before[2].get(pid, 0.0) for pid, t in pg_after.items()),
        )
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    try:
        received = sim.messages()
        queries = queries_per_message(location, sim)
    finally:
        sim.stop()

    assert first_claim is not None and all_claimed is not None
    statuses = status_counts(location) - Counter({"sent": PROBE + 1})
    drain = drained - first_claim
    rate = N / drain
    sids = dict(OutboundMessage.objects.filter(location=location).values_list("provider_id", "to"))
    per_number = Counter(m.to for m in received)
    matched = sum(1 for m in received if sids.get(m.sid) == m.to)
    exactly_once = (
        statuses == Counter({"sent": N})
        and len(received) == N
        and len(per_number) == N
        and matched == N
    )
    # The machine is shared and busy: CPU time per message says what a quiet one would do.
    per_message = [1000 * t / N for t in cpu_used]
    cores = os.cpu_count() or 1
    quiet_rate = cores * 1000 / sum(per_message)
    quiet_limit = cores * 1000 / (1000 * sum(limit_cpu) / N)
    extra = {
        "messages": N,
        "received by Twilio": len(received),
        "distinct numbers": len(per_number),
        "received twice": sum(1 for n in per_number.values() if n > 1),
        "rows with their sid at Twilio": matched,
        "outbox": dict(statuses),
        "exactly once": "yes" if exactly_once else "NO",
        "concurrency": f"{CONCURRENCY} worker processes × {SEND_CONCURRENCY} sends",
        "batch": settings.REMINDERS_SEND_BATCH,
        "SQL per message": f"dispatch {queries[0]:.2f} + send {queries[1]:.2f}",
        "SQL for one message sent alone": f"{queries[2]:.0f}",
        "CPU ms per message": (
            f"workers {per_message[0]:.2f}, Twilio server {per_message[1]:.2f}, "
            f"PostgreSQL {per_message[2]:.2f}"
        ),
        f"CPU-bound rate on {cores} idle cores": (
            f"{quiet_rate:,.0f} msg/s (limit {quiet_limit:,.0f}: server + client "
            f"{1000 * sum(limit_cpu) / N:.2f} ms per request)"
        ),
    }
    figures = [
        Figure(
            scenario="Dispatch",
            name=f"Reminders sent, {N:,} due: beat's dispatcher → Celery → Twilio server",
            value=rate,
            unit="msg/s",
            limit=limit,
            limit_unit="msg/s",
            limit_label=f"the Twilio server alone, plain HTTP client, {in_flight} in flight",
            target=f"≥ {TARGET} msg/s, exactly once",
            met=rate >= TARGET and exactly_once,
            extra=extra,
        ),
        Figure(
            scenario="Dispatch",
            name=f"Time to drain {N:,} due reminders",
            value=drain,
            unit="s",
            limit=N / limit,
            limit_unit="s",
            limit_label="the same count at the Twilio server's own rate",
            extra={
                "from the task's publish": f"{drained - published:.1f} s",
                "dispatcher claimed all": f"{all_claimed - first_claim:.1f} s after its first",
                "with beat's tick": f"+ up to 60 s ({drained - published + 60:.0f} s worst case)",
                "dispatcher runs": "1 (one run claimed every due row)",
            },
        ),
    ]
    if not exactly_once:
        print("FAILED: not exactly one message per row", file=sys.stderr)
    return figures


if __name__ == "__main__":
    for figure in run():
        print(figure.line())
