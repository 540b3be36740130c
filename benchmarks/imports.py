"""How fast a big spreadsheet imports, and whether memory stays flat.

Writes a CSV of N patient rows (default 100,000: chart number, name, birth date,
mobile, email, next recall), then on PostgreSQL (DATABASE_URL) runs the dry run,
the import, and the same import again (which must change nothing). For each it
prints rows per second and the process's peak resident memory so far (ru_maxrss)
— flat memory means the same peak for 10,000 rows as for 100,000.

    make bench                      # part of the benchmarks
    BENCH_IMPORT_ROWS=20000 .venv/bin/python benchmarks/imports.py
"""

import csv
import datetime as dt
import os
import random
import resource
import sys
import tempfile
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
from django.db import connection  # noqa: E402

from imports.models import ImportSource  # noqa: E402
from imports.services import import_file  # noqa: E402
from locations.models import Location  # noqa: E402
from practicecrm.audit import system_actor  # noqa: E402

ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "100000"))
FIRST = ["Ana", "José", "Zoë", "Minh", "Siobhan", "Raj", "Amara", "Elena", "Hương", "Liam"]
LAST = ["Núñez", "Okafor", "Lindqvist", "Tran", "O'Brien", "Patel", "Castillo", "Nguyễn", "Smith"]


def write_file(path: Path) -> None:
    rng = random.Random(7)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["Chart #", "First Name", "Last Name", "DOB", "Cell", "Email", "Next Recall"])
        for i in range(ROWS):
            born = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(30000))
            out.writerow(
                [
                    f"B-{i:07d}",
                    rng.choice(FIRST),
                    f"{rng.choice(LAST)}{i}",
                    born.strftime("%m/%d/%Y"),
                    f"(512) {200 + i // 10000:03d}-{i % 10000:04d}",
                    f"patient{i}@example.com",
                    (dt.date(2027, 1, 1) + dt.timedelta(days=rng.randrange(365))).isoformat(),
                ]
            )


def measure(label: str, source: ImportSource, path: Path, *, dry_run: bool) -> dict:
    started = time.perf_counter()
    with system_actor():
        batch = import_file(source=source, path=path, dry_run=dry_run)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000  # kB on Linux
    counts = {k: v for k, v in batch.counts.items() if v}
    print(
        f"  {label:<22} {elapsed:6.1f} s  {ROWS / elapsed:8,.0f} rows/s  "
        f"peak RSS {peak:6.0f} MB  {counts}"
    )
    return batch.counts


def clear(location: Location) -> None:
    """Remove the bench's patients in SQL: a model delete would load and log each one."""
    patients = "SELECT id FROM patients_patient WHERE home_location_id = %s"
    with connection.cursor() as cursor:
        for table in ("imports_sourcerecalldate", "patients_externalidentifier"):
            cursor.execute(f"DELETE FROM {table} WHERE patient_id IN ({patients})", [location.pk])
        cursor.execute(
            "DELETE FROM auditlog_logentry WHERE (additional_data->>'patient_id')::bigint"
            f" IN ({patients})",
            [location.pk],
        )
        cursor.execute("DELETE FROM patients_patient WHERE home_location_id = %s", [location.pk])


def main() -> None:
    call_command("migrate", verbosity=0)
    location, _ = Location.objects.get_or_create(
        slug="bench-imports", defaults={"name": "Bench Imports", "time_zone": "America/Chicago"}
    )
    clear(location)
    source, _ = ImportSource.objects.get_or_create(
        system="bench-imports", defaults={"name": "Bench spreadsheet", "location": location}
    )
    source.batches.all().delete()
    # Start from the state of a database that never held these rows: the dead
    # rows of the previous run vacuumed away, statistics fresh.
    with connection.cursor() as cursor:
        cursor.execute(
            "VACUUM ANALYZE patients_patient, patients_externalidentifier, "
            "imports_sourcerecalldate, auditlog_logentry"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.csv"
        write_file(path)
        size = path.stat().st_size / 1_000_000
        print(f"Import benchmark: {ROWS:,} patient rows, {size:.1f} MB CSV, PostgreSQL")
        measure("dry run", source, path, dry_run=True)
        first = measure("import", source, path, dry_run=False)
        again = measure("re-import (unchanged)", source, path, dry_run=False)
    clear(location)
    created = first.get("new", 0) + first.get("duplicate_suspect", 0)
    if created != ROWS or again.get("unchanged") != ROWS:
        sys.exit("FAILED: the import or the unchanged re-import did not account for every row")


if __name__ == "__main__":
    main()
