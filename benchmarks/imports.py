"""How fast a big spreadsheet imports, against PostgreSQL's own COPY, and whether
memory stays flat.

Writes a CSV of N patient rows (default 100,000: chart number, name, birth date,
mobile, email, next recall), then on PostgreSQL (DATABASE_URL) runs the dry run,
the import, and the same import again (which must change nothing), each end to
end through `imports.services.import_file` as the web page and the nightly
command run it. The limit, measured in the same run: PostgreSQL COPY of the same
rows (the patient table's columns, as the import wrote them) from this process
into a bare table — no index, no constraint, no audit trail, no Python.

Memory: the process's peak resident memory (ru_maxrss) for N rows, and for
N/5 rows in a fresh process of its own (a process's peak never goes down, so
measuring both in one process would say nothing). Flat memory means the two
peaks are about the same.

Besides wall time, each step reports the CPU seconds this process and its
PostgreSQL backend spent: on a machine shared with other work the wall time is
noisy, the CPU time much less so.

    make bench                      # part of the benchmarks (benchmarks/run.py calls run())
    .venv/bin/python benchmarks/imports.py
    BENCH_IMPORT_ROWS=20000 .venv/bin/python benchmarks/imports.py
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "practicecrm.settings")

from benchmarks.common import ensure_database  # noqa: E402

ensure_database(os.environ.get("DATABASE_URL", ""))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from benchmarks.results import Figure  # noqa: E402
from imports.models import ImportSource  # noqa: E402
from imports.services import import_file  # noqa: E402
from locations.models import Location  # noqa: E402
from practicecrm.audit import system_actor  # noqa: E402

ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "100000"))
TARGET = 5000  # rows/s, issue #7
FIRST = ["Ana", "José", "Zoë", "Minh", "Siobhan", "Raj", "Amara", "Elena", "Hương", "Liam"]
LAST = ["Núñez", "Okafor", "Lindqvist", "Tran", "O'Brien", "Patel", "Castillo", "Nguyễn", "Smith"]
MEMORY_MARK = "@@IMPORT-MEMORY@@"


def write_file(path: Path, rows: int) -> None:
    rng = random.Random(7)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["Chart #", "First Name", "Last Name", "DOB", "Cell", "Email", "Next Recall"])
        for i in range(rows):
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


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _backend_cpu() -> float | None:
    """CPU seconds of this connection's PostgreSQL backend (same machine only)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spent(before: float | None, after: float | None, *, digits: int = 1) -> float | None:
    return round(after - before, digits) if before is not None and after is not None else None


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(label: str, source: ImportSource, path: Path, rows: int, *, dry_run: bool) -> dict:
    cpu, backend = _own_cpu(), _backend_cpu()
    started = time.perf_counter()
    with system_actor():
        batch = import_file(source=source, path=path, dry_run=dry_run)
    elapsed = time.perf_counter() - started
    after = _backend_cpu()
    result = {
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "python_cpu_s": round(_own_cpu() - cpu, 1),
        "postgres_cpu_s": _spent(backend, after),
        "peak_mb": round(peak_mb()),
        "counts": {k: v for k, v in batch.counts.items() if v},
    }
    print(
        f"  {label:<22} {elapsed:6.1f} s  {rows / elapsed:8,.0f} rows/s  "
        f"CPU: Python {result['python_cpu_s']} s, PostgreSQL {result['postgres_cpu_s']} s  "
        f"peak RSS {result['peak_mb']} MB  {result['counts']}",
        flush=True,
    )
    return result


def copy_limit(location: Location, rows: int) -> dict:
    """COPY the rows the import wrote (every patient column) into a bare table.

    The data is read out first, into this process; only the COPY in is timed:
    what PostgreSQL needs to take these rows from a client with nothing else to
    do — no index, constraint, trigger or audit entry, no Python per row.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
            "WHERE attrelid = 'patients_patient'::regclass AND attnum > 0 AND NOT attisdropped"
        )
        columns = cursor.fetchone()[0]
        data = io.BytesIO()
        with cursor.cursor.copy(
            f"COPY (SELECT {columns} FROM patients_patient WHERE home_location_id = "
            f"{int(location.pk)}) TO STDOUT"
        ) as copy:
            for block in copy:
                data.write(block)
        cursor.execute("DROP TABLE IF EXISTS bench_import_copy_limit")
        cursor.execute(
            "CREATE TABLE bench_import_copy_limit AS SELECT * FROM patients_patient WITH NO DATA"
        )
        try:
            backend = _backend_cpu()
            started = time.perf_counter()
            with cursor.cursor.copy(f"COPY bench_import_copy_limit ({columns}) FROM STDIN") as copy:
                view = data.getbuffer()
                for at in range(0, len(view), 1 << 16):
                    copy.write(view[at : at + (1 << 16)])
                del view
            elapsed = time.perf_counter() - started
            after = _backend_cpu()
            cursor.execute("SELECT count(*) FROM bench_import_copy_limit")
            copied = cursor.fetchone()[0]
        finally:
            cursor.execute("DROP TABLE IF EXISTS bench_import_copy_limit")
    if copied != rows:
        raise RuntimeError(f"the COPY limit copied {copied} rows, not {rows}")
    result = {
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "postgres_cpu_s": _spent(backend, after, digits=2),
    }
    print(
        f"  {'limit: COPY, bare table':<22} {elapsed:6.1f} s  {rows / elapsed:8,.0f} rows/s  "
        f"CPU: PostgreSQL {result['postgres_cpu_s']} s",
        flush=True,
    )
    return result


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


def _setup() -> tuple[Location, ImportSource]:
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
    return location, source


def scenario(rows: int, *, with_limit: bool) -> dict:
    """Dry run, import, unchanged re-import (and the COPY limit) for `rows` rows."""
    location, source = _setup()
    results: dict = {"rows": rows, "start_mb": round(peak_mb())}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.csv"
            write_file(path, rows)
            size = path.stat().st_size / 1_000_000
            results["file_mb"] = round(size, 1)
            print(f"Import benchmark: {rows:,} patient rows, {size:.1f} MB CSV, PostgreSQL")
            results["dry_run"] = measure("dry run", source, path, rows, dry_run=True)
            results["import"] = measure("import", source, path, rows, dry_run=False)
            results["again"] = measure("re-import (unchanged)", source, path, rows, dry_run=False)
            # The imports' peak, before the limit's COPY (which holds its data here).
            results["peak_mb"] = round(peak_mb())
            if with_limit:
                results["limit"] = copy_limit(location, rows)
    finally:
        clear(location)
    first, again = results["import"]["counts"], results["again"]["counts"]
    if (
        first.get("new", 0) + first.get("duplicate_suspect", 0) != rows
        or again.get("unchanged") != rows
    ):
        raise RuntimeError("the import or the unchanged re-import did not account for every row")
    return results


def _small_run_peak(rows: int) -> dict:
    """The same scenario for fewer rows in a fresh process; its peak memory."""
    env = {**os.environ, "BENCH_IMPORT_ROWS": str(rows), "BENCH_IMPORT_MEMORY_ONLY": "1"}
    done = subprocess.run(
        [sys.executable, __file__], env=env, cwd=BASE_DIR, capture_output=True, text=True
    )
    for line in done.stdout.splitlines():
        if line.startswith(MEMORY_MARK):
            return json.loads(line[len(MEMORY_MARK) :])
    raise RuntimeError(f"the {rows:,}-row run failed:\n{done.stdout}\n{done.stderr}")


def run() -> list[Figure]:
    small_rows = max(ROWS // 5, 1)
    # The small run first, in its own process, so it does not share this one's peak.
    small = _small_run_peak(small_rows)
    big = scenario(ROWS, with_limit=True)
    limit = big["limit"]["rows_per_s"]
    label = f"COPY of the same {ROWS:,} rows into a bare table"
    figures = []
    for key, name, target in (
        ("dry_run", f"dry run, {ROWS:,} patient rows from CSV", True),
        ("import", f"import, {ROWS:,} new patient rows from CSV", True),
        ("again", f"re-import of the same {ROWS:,} rows (nothing changes)", False),
    ):
        step = big[key]
        figures.append(
            Figure(
                scenario="Import",
                name=name,
                value=round(step["rows_per_s"]),
                unit="rows/s",
                limit=round(limit),
                limit_unit="rows/s",
                limit_label=label,
                target=f"≥ {TARGET:,} rows/s" if target else "",
                met=step["rows_per_s"] >= TARGET if target else None,
                extra={
                    "seconds": round(step["seconds"], 1),
                    "Python CPU s": step["python_cpu_s"],
                    "PostgreSQL CPU s": step["postgres_cpu_s"],
                },
            )
        )
    figures.append(
        Figure(
            scenario="Import",
            name=f"peak memory, {ROWS:,} rows ({big['file_mb']} MB CSV)",
            value=big["peak_mb"],
            unit="MB",
            limit=small["peak_mb"],
            limit_unit="MB",
            limit_label=f"the same run for {small_rows:,} rows, in a process of its own",
            target="flat in file size (5× the rows, < 15 % more)",
            # The import's caches (folded names, dates, phones: imports.parsing.
            # CACHE_SIZE entries each) fill up with the first thousand-odd rows;
            # beyond that nothing grows with the file.
            met=big["peak_mb"] <= small["peak_mb"] * 1.15,
            extra={
                f"before the {ROWS:,} rows MB": big["start_mb"],
                f"before the {small_rows:,} rows MB": small["start_mb"],
            },
        )
    )
    return figures


def main() -> None:
    if os.environ.get("BENCH_IMPORT_MEMORY_ONLY"):
        result = scenario(ROWS, with_limit=False)
        print(MEMORY_MARK + json.dumps({k: result[k] for k in ("peak_mb", "start_mb")}))
        return
    for figure in run():
        print(figure.line())


if __name__ == "__main__":
    main()
