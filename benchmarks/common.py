"""What the benchmarks share: a scratch database, percentiles, and "SQL alone".

"SQL alone" is the physical limit of a page: the queries one render sends,
executed again by themselves through a plain cursor (inside a transaction that is
rolled back, so an audit INSERT among them leaves nothing behind). Their summed
execution time is what the page would cost if Django, templates and Python cost
nothing.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Sequence
from urllib.parse import urlsplit


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in `url` if it is not there yet."""
    import psycopg

    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p50, p95, p99) of a list of timings."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, round(pct / 100 * len(ordered) + 0.5)) if pct < 100 else len(ordered)
    return ordered[min(rank, len(ordered)) - 1]


def summary(values_ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values_ms, 50), 1),
        "p95": round(percentile(values_ms, 95), 1),
        "p99": round(percentile(values_ms, 99), 1),
        "mean": round(statistics.fmean(values_ms), 1),
    }


_SKIP = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "BEGIN", "COMMIT")


def sql_alone(captured: list[dict], *, repeats: int = 5) -> float:
    """Milliseconds the captured queries take run alone: best of `repeats` per query,
    summed. Each run happens in a transaction that is rolled back."""
    from django.db import connection, transaction

    total = 0.0
    # Planner settings a page sets for its next statements (SET name = value, e.g.
    # practicecrm.pagination.count_each's hash joins off, until RESET name) hold
    # for the statements after them, so each run repeats those in force first.
    settings: dict[str, str] = {}
    for query in captured:
        sql = query["sql"]
        if sql.lstrip().upper().startswith(_SKIP):
            continue
        if match := re.match(r"\s*(SET|RESET)\s+(\w+)", sql, re.IGNORECASE):
            if match[1].upper() == "SET":
                settings[match[2]] = sql
            else:
                settings.pop(match[2], None)
        best = float("inf")
        for _ in range(repeats):
            with transaction.atomic():
                with connection.cursor() as cursor:
                    for setting in settings.values():
                        cursor.execute(setting)
                    started = time.perf_counter()
                    cursor.execute(sql)
                    if cursor.description is not None:
                        cursor.fetchall()
                    best = min(best, time.perf_counter() - started)
                transaction.set_rollback(True)
        total += best
    return total * 1000
