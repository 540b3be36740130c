"""Small SQL functions the reports need on both PostgreSQL and the embedded SQLite.

Every timestamp a report counts is bucketed by the calendar of the location it
belongs to, and that zone is a column (locations_location.time_zone), not one
setting: an SMS at 23:30 in Seattle is that day in Seattle, whatever UTC says.
PostgreSQL converts with `AT TIME ZONE <column>`; on SQLite, Django registers
`django_datetime_cast_date(value, zone, connection zone)` on every connection,
which takes the zone as an argument as well (stored values are UTC there).
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction
from django.db.models import (
    Aggregate,
    DateField,
    F,
    FloatField,
    Func,
    IntegerField,
    Value,
)

# Integer division truncates toward zero; shifting by a whole number of weeks
# first makes it a floor for any offset within ~19 years either side.
_WEEK_SHIFT = 1000


class LocalDate(Func):
    """The calendar date of a timestamp in a time zone given as an expression."""

    output_field = DateField()

    def __init__(self, expression: Any, zone: Any, **extra: Any) -> None:
        super().__init__(expression, zone, **extra)

    def as_sql(self, compiler, connection, **extra_context):  # type: ignore[override]
        (value_sql, value_params), (zone_sql, zone_params) = (
            compiler.compile(e) for e in self.source_expressions
        )
        if connection.vendor == "postgresql":
            return f"(({value_sql}) AT TIME ZONE ({zone_sql}))::date", (
                *value_params,
                *zone_params,
            )
        if connection.vendor == "sqlite":
            return f"django_datetime_cast_date({value_sql}, {zone_sql}, 'UTC')", (
                *value_params,
                *zone_params,
            )
        raise NotImplementedError(f"LocalDate is not written for {connection.vendor}")


class DaysBetween(Func):
    """`later - earlier` in whole days, both dates (or date expressions)."""

    output_field = IntegerField()

    def __init__(self, later: Any, earlier: Any, **extra: Any) -> None:
        super().__init__(later, earlier, **extra)

    def as_sql(self, compiler, connection, **extra_context):  # type: ignore[override]
        (a_sql, a_params), (b_sql, b_params) = (
            compiler.compile(e) for e in self.source_expressions
        )
        if connection.vendor == "postgresql":
            return f"(({a_sql})::date - ({b_sql})::date)", (*a_params, *b_params)
        if connection.vendor == "sqlite":
            return f"CAST(julianday({a_sql}) - julianday({b_sql}) AS INTEGER)", (
                *a_params,
                *b_params,
            )
        raise NotImplementedError(f"DaysBetween is not written for {connection.vendor}")


def week_index(day: Any, anchor: Any) -> Any:
    """Whole weeks from `anchor` to `day` (floor: the 6 days before anchor are -1)."""
    if isinstance(anchor, dt.date):
        anchor = Value(anchor, output_field=DateField())
    shifted = DaysBetween(day, anchor) + Value(7 * _WEEK_SHIFT)
    return (shifted / Value(7)) - Value(_WEEK_SHIFT)


def local_date(field: str, zone_field: str = "location__time_zone") -> LocalDate:
    return LocalDate(F(field), F(zone_field))


class Median(Aggregate):
    """PostgreSQL's exact median; callers fall back to Python elsewhere (is_native)."""

    function = "PERCENTILE_CONT"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    @staticmethod
    def is_native(connection) -> bool:
        return connection.vendor == "postgresql"


@contextmanager
def analytic_reads() -> Iterator[None]:
    """A transaction for the dashboard's reads, without PostgreSQL's JIT compiler.

    The aggregations are estimated above jit_above_cost, so PostgreSQL compiled
    them to machine code on every request: 1.0 s of a 1.4 s query at 1×, for a
    plan that then runs in milliseconds. `SET LOCAL` ends with the transaction.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL jit = off")
        yield
