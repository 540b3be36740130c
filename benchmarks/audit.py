"""What the audit trail costs, and whether its browser stays usable at 4M entries.

Two measurements on PostgreSQL (DATABASE_URL), each beside its limit:

- **Audit overhead.** 10,000 patients of a location of its own ("Audit bench")
  saved one at a time through `Patient.save()` — the path every form takes, with
  its signals — once with auditlog recording and once inside
  `auditlog.context.disable_auditlog()`. The limit is the run without auditlog;
  the ratio is the price of the trail. The bulk path imports use
  (`bulk_create_audited`, COPY) is timed the same way for 10,000 new patients.
- **Audit-trail browser** (the admin's log entry list, the only place the whole
  trail is browsed): the audit table is topped up to 4,000,000 entries with
  server-side `INSERT … SELECT generate_series` (patient changes spread over five
  years), then the first page is rendered for a superuser; p50/p95 and query
  count, limit = its SQL run alone.

    .venv/bin/python benchmarks/audit.py       # on its own
    make bench                                 # with the others
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "practicecrm.settings")

from benchmarks.common import ensure_database, sql_alone, summary  # noqa: E402
from benchmarks.results import Figure  # noqa: E402

ensure_database(os.environ.get("DATABASE_URL", ""))

import django  # noqa: E402

django.setup()

from auditlog.context import disable_auditlog  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.contenttypes.models import ContentType  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import reverse  # noqa: E402

from locations.models import Location  # noqa: E402
from patients.models import Patient  # noqa: E402
from practicecrm.audit import bulk_create_audited, copy_insert  # noqa: E402

SAVES = int(os.environ.get("BENCH_AUDIT_SAVES", "10000"))
ENTRIES = int(os.environ.get("BENCH_AUDIT_ENTRIES", "4000000"))
RUNS = int(os.environ.get("BENCH_AUDIT_RUNS", "30"))


def _bench_location() -> Location:
    location, _ = Location.objects.get_or_create(
        slug="audit-bench",
        defaults={"name": "Audit bench", "time_zone": "America/Chicago"},
    )
    return location


def _new_patients(location: Location, n: int, tag: str) -> list[Patient]:
    return [
        Patient(
            first_name=f"Audit{i}",
            last_name=f"Bench{tag}",
            date_of_birth=dt.date(1950, 1, 1) + dt.timedelta(days=i % 20000),
            mobile_phone=f"+1512{(5550000 + i) % 10_000_000:07d}",
            home_location=location,
        )
        for i in range(n)
    ]


def _clear(location: Location) -> None:
    ids = list(Patient.objects.filter(home_location=location).values_list("pk", flat=True))
    if ids:
        ct = ContentType.objects.get_for_model(Patient)
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM auditlog_logentry WHERE content_type_id = %s AND object_id = ANY(%s)",
                [ct.pk, ids],
            )
        with disable_auditlog():
            Patient.objects.filter(pk__in=ids).delete()


def _save_all(patients: list[Patient], round_: int) -> float:
    started = time.perf_counter()
    for patient in patients:
        patient.preferred_name = f"Pat{round_}"
        patient.save()
    return time.perf_counter() - started


def overhead() -> list[Figure]:
    location = _bench_location()
    _clear(location)
    with disable_auditlog():
        patients = copy_insert(Patient, _new_patients(location, SAVES, "S"))
    # Warm both paths (connection, content types, code) before the clock.
    _save_all(patients[:200], 0)
    with disable_auditlog():
        _save_all(patients[:200], 0)
    with_audit = _save_all(patients, 1)
    with disable_auditlog():
        without = _save_all(patients, 2)

    # The bulk path of imports: COPY of rows + COPY of their create entries.
    started = time.perf_counter()
    bulk_create_audited(Patient, _new_patients(location, SAVES, "B"))
    bulk_with = time.perf_counter() - started
    started = time.perf_counter()
    with disable_auditlog():
        copy_insert(Patient, _new_patients(location, SAVES, "C"))
    bulk_without = time.perf_counter() - started
    _clear(location)
    return [
        Figure(
            "Audit",
            f"Save {SAVES:,} patients one by one (Patient.save), with audit",
            with_audit,
            "s",
            limit=without,
            limit_unit="s",
            limit_label="the same saves without auditlog",
            extra={
                "saves/s": round(SAVES / with_audit),
                "overhead": f"{(with_audit / without - 1):.0%}",
            },
        ),
        Figure(
            "Audit",
            f"Create {SAVES:,} patients in bulk (imports' COPY path), with audit",
            bulk_with,
            "s",
            limit=bulk_without,
            limit_unit="s",
            limit_label="the same COPY without audit entries",
            extra={"rows/s": round(SAVES / bulk_with)},
        ),
    ]


def top_up(target: int) -> tuple[int, float]:
    """Bring the audit table to `target` entries; returns (rows added, seconds)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM auditlog_logentry")
        have = cursor.fetchone()[0]
    missing = target - have
    if missing <= 0:
        return 0, 0.0
    ct = ContentType.objects.get_for_model(Patient)
    actor = get_user_model().objects.order_by("pk").values_list("pk", flat=True).first()
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM patients_patient")
        max_patient = max(1, cursor.fetchone()[0])
        # Patient changes spread over five years, oldest first; a phone number or an
        # address changed, as the app's own UPDATE entries record it.
        cursor.execute(
            """
            INSERT INTO auditlog_logentry
              (content_type_id, object_pk, object_id, object_repr, serialized_data, action,
               changes_text, changes, actor_id, cid, remote_addr, remote_port, "timestamp",
               additional_data, actor_email)
            SELECT %(ct)s, p::text, p, 'Patient ' || p, NULL, 1, '',
                   CASE WHEN g %% 2 = 0
                        THEN jsonb_build_object('mobile_phone', jsonb_build_array(
                               '+1512555' || lpad((g %% 10000)::text, 4, '0'),
                               '+1512556' || lpad((g %% 10000)::text, 4, '0')))
                        ELSE jsonb_build_object('address_line1', jsonb_build_array(
                               g || ' Oak St', g || ' Elm Ave')) END,
                   %(actor)s, NULL, ('10.0.0.' || (g %% 200 + 1))::inet, NULL,
                   now() - interval '5 years' + (g * (interval '5 years' / %(n)s)),
                   jsonb_build_object('patient_id', p), NULL
            FROM generate_series(1, %(n)s) AS g, LATERAL (SELECT (g %% %(maxp)s) + 1 AS p) AS pick
            """,
            {"ct": ct.pk, "actor": actor, "n": missing, "maxp": max_patient},
        )
        cursor.execute("ANALYZE auditlog_logentry")
    return missing, time.perf_counter() - started


def browser() -> list[Figure]:
    added, seconds = top_up(ENTRIES)
    if added:
        print(f"  audit table topped up with {added:,} entries in {seconds:.0f} s")
    user, _ = get_user_model().objects.get_or_create(
        username="bench-auditor", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    url = reverse("admin:auditlog_logentry_changelist")
    for _ in range(3):
        assert client.get(url).status_code == 200
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as ctx:
        client.get(url)
    alone = sql_alone(ctx.captured_queries)
    stats = summary(times)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM auditlog_logentry")
        total = cursor.fetchone()[0]
    return [
        Figure(
            "Audit",
            f"Audit-trail browser, first page ({total / 1e6:.1f}M entries)",
            stats["p95"],
            "ms p95",
            limit=alone,
            limit_unit="ms",
            limit_label=f"its {len(ctx.captured_queries)} SQL queries run alone",
            extra={"p50": stats["p50"], "p99": stats["p99"], "queries": len(ctx.captured_queries)},
        )
    ]


def run_overhead() -> list[Figure]:
    call_command("migrate", verbosity=0)
    return overhead()


def run() -> list[Figure]:
    return run_overhead() + browser()


if __name__ == "__main__":
    for figure in run():
        print(figure.line())
