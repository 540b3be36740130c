"""How fast the recall dashboard renders for 20 locations and 100,000 patients.

Builds (once; a second run reuses it) 20 locations with 5,000 patients each, one
follow-up per patient over the last half year, contact attempts, bookings, a
quarter of a million reminder rows and replies, in bulk (deterministic seed), on
PostgreSQL (DATABASE_URL). Then renders the dashboard through Django's test
client as an admin of all 20 locations and as a manager of 3, for each period,
and prints the median and p95 of the render time and the number of queries.

    make bench                               # part of the benchmarks
    BENCH_DASHBOARD_RUNS=5 .venv/bin/python benchmarks/dashboard.py

The rows are written with bulk_create, without audit entries: this is a scratch
database for timing reads, not a record of anyone's work.
"""

import datetime as dt
import os
import random
import statistics
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "practicecrm.settings")

from benchmarks.dispatch import ensure_database  # noqa: E402

ensure_database(os.environ.get("DATABASE_URL", ""))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from followups.models import ContactAttempt, Followup, FollowupType  # noqa: E402
from locations.models import Location, LocationGrant, Role  # noqa: E402
from patients.models import Appointment, AppointmentType, Patient  # noqa: E402
from reminders.models import InboundMessage, OutboundMessage  # noqa: E402

LOCATIONS = 20
PATIENTS = int(os.environ.get("BENCH_DASHBOARD_PATIENTS", "100000"))
RUNS = int(os.environ.get("BENCH_DASHBOARD_RUNS", "7"))
ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"]
BATCH = 5000


def build() -> None:
    rng = random.Random(6)
    now = timezone.now()
    today = timezone.localdate()
    locations = [
        Location.objects.create(
            name=f"Bench clinic {i:02d}", slug=f"bench-dash-{i:02d}", time_zone=ZONES[i % 4]
        )
        for i in range(LOCATIONS)
    ]
    kind = FollowupType.objects.get_or_create(code="bench-recall", defaults={"name": "Recall"})[0]
    visit = AppointmentType.objects.get_or_create(code="bench-visit", defaults={"name": "Visit"})[0]
    admin = _user("bench-admin", Role.ADMIN, locations)
    staff_users = [
        _user(f"bench-desk-{i}", Role.FRONT_DESK, [loc]) for i, loc in enumerate(locations)
    ]
    _user("bench-manager", Role.PRACTICE_MANAGER, locations[:3])
    del admin

    patients = [
        Patient(
            first_name=f"Pat{i}",
            last_name=f"Bench{i}",
            date_of_birth=dt.date(1950, 1, 1) + dt.timedelta(days=i % 20000),
            home_location=locations[i % LOCATIONS],
            mobile_phone=f"+1512555{i % 10000:04d}",
        )
        for i in range(PATIENTS)
    ]
    Patient.objects.bulk_create(patients, batch_size=BATCH)
    visits, followups = [], []
    for p in patients:
        due = today - dt.timedelta(days=rng.randint(-30, 180))
        followups.append(
            Followup(
                patient=p,
                followup_type=kind,
                location=p.home_location,
                due_date=due,
                lapses_on=due + dt.timedelta(days=120),
                status=rng.choice(["open", "open", "contacted", "done", "scheduled", "lapsed"]),
            )
        )
        start = now - dt.timedelta(days=rng.randint(-20, 120), hours=rng.randint(0, 9))
        visits.append(
            Appointment(
                patient=p,
                location=p.home_location,
                appointment_type=visit,
                start=start,
                end=start + dt.timedelta(minutes=30),
                status=rng.choice(["completed"] * 8 + ["no_show", "cancelled"])
                if start < now
                else "scheduled",
            )
        )
    Appointment.objects.bulk_create(visits, batch_size=BATCH)
    # Booking times: a few weeks before each visit (never in the future).
    for a in visits:
        a.created_at = min(now, a.start - dt.timedelta(days=rng.randint(1, 40)))
    Appointment.objects.bulk_update(visits, ["created_at"], batch_size=BATCH)
    for f, a in zip(followups, visits, strict=True):
        if f.status in ("done", "scheduled"):
            f.scheduled_appointment = a
    Followup.objects.bulk_create(followups, batch_size=BATCH)

    attempts = []
    for f, a in zip(followups, visits, strict=True):
        if f.status != "open" and rng.random() < 0.6:
            at = a.created_at - dt.timedelta(days=rng.randint(0, 20))
            attempts.append(
                ContactAttempt(
                    followup=f,
                    channel="call",
                    outcome="left_message",
                    staff=staff_users[f.location_id % LOCATIONS],
                    attempted_at=at,
                )
            )
    ContactAttempt.objects.bulk_create(attempts, batch_size=BATCH)

    messages, replies = [], []
    statuses = ["delivered"] * 12 + ["sent", "undelivered", "failed", "suppressed", "planned"]
    for n, (p, a) in enumerate(zip(patients, visits, strict=True)):
        for step in (1, 2):
            status = rng.choice(statuses)
            at = a.start - dt.timedelta(days=step * 2)
            messages.append(
                OutboundMessage(
                    idempotency_key=f"bench-dash:{n}:{step}",
                    kind="appointment_reminder" if step == 1 else "recall",
                    channel="sms",
                    patient=p,
                    recipient=p,
                    location=p.home_location,
                    appointment=a if step == 1 else None,
                    followup=followups[n] if step == 2 else None,
                    to=p.mobile_phone,
                    sender="+15125550100",
                    body="Reminder",
                    scheduled_for=at,
                    sent_at=at if status in ("delivered", "sent", "undelivered") else None,
                    status=status,
                    reason="No SMS consent" if status == "suppressed" else "",
                )
            )
        if rng.random() < 0.1:
            replies.append(
                InboundMessage(
                    provider_id=f"SMbench{n}",
                    from_number=p.mobile_phone,
                    to_number="+15125550100",
                    location=p.home_location,
                    action=rng.choice(["confirmed", "confirmed", "opt_out", "inbox"]),
                    confirmed_appointment=a,
                    received_at=a.start - dt.timedelta(days=1),
                )
            )
    OutboundMessage.objects.bulk_create(messages, batch_size=BATCH)
    InboundMessage.objects.bulk_create(replies, batch_size=BATCH)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(
        f"  built {len(patients):,} patients, {len(followups):,} follow-ups, "
        f"{len(attempts):,} attempts, {len(messages):,} outbox rows, {len(replies):,} replies"
    )


def _user(username: str, role: str, locations: list[Location]):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username=username, password="bench-password-1")
    for loc in locations:
        LocationGrant.objects.create(user=user, location=loc, role=role)
    return user


def measure(username: str, query: str) -> tuple[float, float, int]:
    from django.contrib.auth import get_user_model

    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    client.get(f"/reports/?{query}")  # warm: session, caches
    times, queries = [], 0
    for _ in range(RUNS):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(f"/reports/?{query}")
            times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
        queries = len(captured)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, queries


def main() -> None:
    call_command("migrate", verbosity=0)
    print(f"Recall dashboard: {LOCATIONS} locations, {PATIENTS:,} patients (PostgreSQL)")
    if not Location.objects.filter(slug="bench-dash-00").exists():
        started = time.perf_counter()
        with transaction.atomic():
            build()
        print(f"  data set built in {time.perf_counter() - started:.0f} s")
    else:
        print("  reusing the data set built by an earlier run")
    for username, who in (("bench-admin", "admin, 20 locations"), ("bench-manager", "manager, 3")):
        for query in ("period=4w", "period=quarter", "period=week"):
            median, p95, queries = measure(username, query)
            print(
                f"  {who:<20} {query:<15} median {median * 1000:6.0f} ms   "
                f"p95 {p95 * 1000:6.0f} ms   {queries} queries"
            )


if __name__ == "__main__":
    main()
