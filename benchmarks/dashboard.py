"""How fast the recall dashboard renders, in-process, and what its SQL alone costs.

`run()` measures a database that already has data — `manage.py generate_scale`'s
(users bench-admin and bench-manager-20) or this file's own builder (bench-admin,
bench-manager): the dashboard rendered through Django's test client, as the admin
of every location and as a manager, for each period, BENCH_DASHBOARD_RUNS times
after a warm-up. Per user and period: median and p95 render time, the query
count, and the limit — the render's SQL run alone: one render's statements are
captured and executed again in order through a plain cursor, in one transaction
(so the dashboard's `SET LOCAL jit = off` holds for the rest, as in the page),
best of BENCH_DASHBOARD_SQL_RUNS per statement, summed. benchmarks/pages.py
measures the same page through gunicorn; this is the in-process detail.

`main()` (`make bench`) builds its own data set first when the database has none:
20 locations with 5,000 patients each, one follow-up per patient over the last
half year, contact attempts, bookings, a quarter of a million reminder rows and
replies, and five years of history behind them (BENCH_DASHBOARD_HISTORY visits
per patient, 7 by default: 800,000 visits, ~600,000 follow-ups, ~600,000 outbox
rows) — written in bulk (deterministic seed), without audit entries: a scratch
database for timing reads, not a record of anyone's work.

    make bench                               # part of the benchmarks
    BENCH_DASHBOARD_RUNS=5 .venv/bin/python benchmarks/dashboard.py
    DATABASE_URL=postgres://…/pcrm_scale .venv/bin/python benchmarks/dashboard.py
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

from benchmarks.common import ensure_database, percentile  # noqa: E402

ensure_database(os.environ.get("DATABASE_URL", ""))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from benchmarks.results import Figure  # noqa: E402
from followups.models import ContactAttempt, Followup, FollowupType  # noqa: E402
from locations.models import Location, LocationGrant, Role  # noqa: E402
from patients.models import Appointment, AppointmentType, Patient  # noqa: E402
from reminders import tallies  # noqa: E402
from reminders.models import InboundMessage, OutboundMessage  # noqa: E402

LOCATIONS = 20
PATIENTS = int(os.environ.get("BENCH_DASHBOARD_PATIENTS", "100000"))
RUNS = int(os.environ.get("BENCH_DASHBOARD_RUNS", "7"))
SQL_RUNS = int(os.environ.get("BENCH_DASHBOARD_SQL_RUNS", "3"))
HISTORY = int(os.environ.get("BENCH_DASHBOARD_HISTORY", "7"))  # past visits per patient
PERIODS = {"4w": "last 4 weeks", "quarter": "last quarter", "week": "this week"}
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
                    location_id=f.location_id,
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
    tallies.compact()  # the outbox's counts, folded in as beat would
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


# Five years of history behind the recent half year build() makes: visits, the
# follow-up each completed one closed (booked from it), attempts on 40% of those,
# the last two years' reminders and recall messages for 30%. Plain SQL: a million
# rows in a minute, where bulk_create would take ten.
HISTORY_SQL = """
SELECT setseed(0.6);
CREATE TEMP TABLE hist_visit AS
SELECT p.id AS patient_id, p.home_location_id AS location_id,
       date_trunc('hour', now() - interval '125 days' - (random() * 1700) * interval '1 day')
         + (8 + floor(random() * 9)) * interval '1 hour' AS start,
       random() AS r, random() AS r2
  FROM patients_patient p, generate_series(1, %(per_patient)s) g
 WHERE p.last_name LIKE 'Bench%%';
INSERT INTO patients_appointment
  (start, "end", status, source, external_system, external_id, created_at, updated_at,
   location_id, appointment_type_id, patient_id)
SELECT start, start + interval '30 minutes',
       CASE WHEN r < 0.07 THEN 'no_show' WHEN r < 0.15 THEN 'cancelled' ELSE 'completed' END,
       'manual', 'bench-hist', '', start - (1 + floor(r2 * 40)) * interval '1 day', start,
       location_id, %(visit_type)s, patient_id
  FROM hist_visit;
CREATE TEMP TABLE hist_f AS
SELECT a.id AS appointment_id, a.patient_id, a.location_id, a.start,
       (a.start - (floor(random() * 90) - 30) * interval '1 day')::date AS due, random() AS r
  FROM patients_appointment a
 WHERE a.external_system = 'bench-hist' AND a.status = 'completed';
INSERT INTO followups_followup
  (status, due_date, lapses_on, source, reason, dismissed_reason, closed_at, created_at,
   updated_at, location_id, patient_id, scheduled_appointment_id, followup_type_id)
SELECT CASE WHEN r < 0.85 THEN 'done' WHEN r < 0.95 THEN 'lapsed' ELSE 'dismissed' END,
       due, due + 120, 'rule', '', '', start, due - 180, start, location_id, patient_id,
       CASE WHEN r < 0.85 THEN appointment_id END, %(recall_type)s
  FROM hist_f;
CREATE TEMP TABLE hist_fu AS
SELECT f.id, f.location_id, f.patient_id, a.created_at, random() AS r
  FROM followups_followup f
  JOIN patients_appointment a ON a.id = f.scheduled_appointment_id
 WHERE a.external_system = 'bench-hist';
INSERT INTO followups_contactattempt
  (channel, outcome, note, phone, attempted_at, staff_id, followup_id, location_id)
SELECT 'call', 'left_message', '', '', h.created_at - floor(h.r * 20) * interval '1 day',
       u.id, h.id, h.location_id
  FROM hist_fu h
  LEFT JOIN auth_user u
         ON u.username = 'bench-desk-' || ((h.location_id - %(first_location)s) %% 20)
 WHERE h.r < 0.4;
INSERT INTO reminders_outboundmessage
  (idempotency_key, kind, channel, "to", sender, subject, body, html_body, scheduled_for,
   status, reason, provider_id, error_code, error_message, attempts, sent_at, created_at,
   updated_at, appointment_id, followup_id, location_id, patient_id, recipient_id,
   needs_attention, step)
SELECT 'bench-hist:' || x.kind || ':' || x.ref, x.kind, 'sms', '+15125550000', '+15125550100',
       '', 'Reminder', '', x.at, x.status,
       CASE WHEN x.status = 'suppressed' THEN 'No SMS consent' ELSE '' END, '', '', '', 1,
       CASE WHEN x.status IN ('sent', 'delivered', 'undelivered') THEN x.at END, x.at, x.at,
       x.appointment_id, x.followup_id, x.location_id, x.patient_id, x.patient_id, false, ''
  FROM (
    SELECT 'appointment_reminder' AS kind, a.id AS ref, a.start - interval '2 days' AS at,
           (ARRAY['delivered', 'delivered', 'delivered', 'delivered', 'delivered', 'delivered',
                  'delivered', 'delivered', 'delivered', 'delivered', 'delivered', 'delivered',
                  'sent', 'undelivered', 'failed', 'suppressed'])[1 + floor(random() * 16)]
             AS status,
           a.id AS appointment_id, NULL::bigint AS followup_id, a.location_id, a.patient_id
      FROM patients_appointment a
     WHERE a.external_system = 'bench-hist' AND a.start > now() - interval '2 years'
    UNION ALL
    SELECT 'recall', h.id, h.created_at - floor(h.r * 10) * interval '1 day', 'delivered',
           NULL, h.id, h.location_id, h.patient_id
      FROM hist_fu h
     WHERE h.r > 0.7
  ) x;
DROP TABLE hist_visit, hist_f, hist_fu
"""


def build_history(per_patient: int) -> None:
    """Add `per_patient` past visits per patient, and what they imply (HISTORY_SQL)."""
    params = {
        "per_patient": per_patient,
        "visit_type": AppointmentType.objects.get(code="bench-visit").pk,
        "recall_type": FollowupType.objects.get(code="bench-recall").pk,
        "first_location": Location.objects.get(slug="bench-dash-00").pk,
    }
    with connection.cursor() as cursor:
        for statement in HISTORY_SQL.split(";\n"):
            cursor.execute(statement, params)
    tallies.compact()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    counts = {
        model.__name__: model.objects.count()
        for model in (Appointment, Followup, ContactAttempt, OutboundMessage)
    }
    print("  with history: " + ", ".join(f"{n:,} {name}" for name, n in counts.items()))


# --- measuring ----------------------------------------------------------------------


def _client(username: str) -> Client:
    from django.contrib.auth import get_user_model

    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return client


def sql_alone(captured: list[dict], repeats: int) -> float:
    """Milliseconds one render's statements take run alone, best of `repeats` each.

    In order and in one transaction (rolled back), unlike benchmarks.common's
    per-statement transactions: the dashboard's `SET LOCAL jit = off` must hold
    for the statements after it, as it does in the page.
    """
    best: dict[int, float] = {}
    for _ in range(repeats):
        with transaction.atomic():
            with connection.cursor() as cursor:
                for i, query in enumerate(captured):
                    sql = query["sql"]
                    if sql.lstrip().upper().startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")):
                        continue
                    started = time.perf_counter()
                    cursor.execute(sql)
                    if cursor.description is not None:
                        cursor.fetchall()
                    best[i] = min(best.get(i, float("inf")), time.perf_counter() - started)
            transaction.set_rollback(True)
    return sum(best.values()) * 1000


def measure(username: str, query: str) -> dict:
    """Median and p95 render time (ms), query count and SQL alone of /reports/?query."""
    client = _client(username)
    client.get(f"/reports/?{query}")  # warm: session, caches, connection
    times, queries = [], 0
    captured: list[dict] = []
    for _ in range(RUNS):
        with CaptureQueriesContext(connection) as context:
            started = time.perf_counter()
            response = client.get(f"/reports/?{query}")
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
        queries = sum(
            not q["sql"].lstrip().upper().startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))
            for q in context.captured_queries
        )
        captured = list(context.captured_queries)
    return {
        "median": statistics.median(times),
        "p95": percentile(times, 95),
        "queries": queries,
        "alone": sql_alone(captured, SQL_RUNS),
    }


def _manager() -> tuple[str, str]:
    """The manager to measure: generate_scale's (20 locations) or build()'s (3)."""
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    for username in ("bench-manager-20", "bench-manager"):
        user = users.filter(username=username).first()
        if user is not None:
            count = LocationGrant.objects.filter(user=user).values("location").distinct().count()
            return username, f"manager, {count} locations"
    raise SystemExit("no bench manager: run manage.py generate_scale or this file's main()")


def run(scale: float = 1) -> list[Figure]:
    """The dashboard per user and period, on a database that has data (see module)."""
    locations = Location.objects.filter(is_active=True).count()
    target_ms = 300 * (2 if scale >= 10 else 1)
    manager, manager_label = _manager()
    figures = []
    for username, who in (
        ("bench-admin", f"admin, {locations} locations"),
        (manager, manager_label),
    ):
        for period, label in PERIODS.items():
            got = measure(username, f"period={period}")
            figure = Figure(
                scenario="Dashboard",
                name=f"Recall dashboard in-process — {who}, {label}",
                value=got["p95"],
                unit="ms p95",
                limit=got["alone"],
                limit_unit="ms",
                limit_label=f"its {got['queries']} SQL queries run alone",
                target=f"p95 ≤ {target_ms} ms",
                met=got["p95"] <= target_ms,
                extra={
                    "median": f"{got['median']:.0f} ms",
                    "queries": got["queries"],
                    "runs": RUNS,
                },
            )
            print(figure.line(), flush=True)
            figures.append(figure)
    return figures


def main() -> None:
    call_command("migrate", verbosity=0)
    print(f"Recall dashboard: {LOCATIONS} locations, {PATIENTS:,} patients (PostgreSQL)")
    if not Location.objects.filter(slug="bench-dash-00").exists():
        started = time.perf_counter()
        with transaction.atomic():
            build()
            if HISTORY:
                build_history(HISTORY)
        print(f"  data set built in {time.perf_counter() - started:.0f} s")
    else:
        print("  reusing the data set built by an earlier run")
    run(float(os.environ.get("BENCH_SCALE", "1")))


if __name__ == "__main__":
    main()
