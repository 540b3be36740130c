"""The follow-up numbers of the dashboard in one pass, on PostgreSQL (issue #7).

reports.metrics defines every follow-up metric once, as a filter on Followup, and
the drill-down lists apply those filters. Counting with them works on any
database, but each metric's contact rule becomes its own subquery and the booking
its own join, and PostgreSQL's plan for that read every follow-up and every visit
several times: 5.7 s of the dashboard's 10 s at 1× (and the chart's bookings,
attempts and the staff table another 2.4 s). Here the same definitions are one
statement that reads each row once:

1. `contact`: the attempts and recall messages that went out from the
   attribution window before the period (or the chart's weeks) to its end, each
   with its day on its location's calendar;
2. `cand`: the follow-ups any metric can count — due or lapsing in the period or
   open and past due (`dated`, through three indexes), and the contacted ones;
3. `booking`: when the booked ones among the contacted were booked;
4. `per`: per contacted follow-up, whether it was contacted in the period,
   booked within the window after a contact (attributed), and after a contact
   of the period (converted);
5. the counts per (location, type) as FILTER clauses, and — UNION ALL — the
   chart's bookings and attempts per week and the staff table.

tests/reports/test_onepass.py checks, on randomised histories, that every count
here equals the length of its drill-down list (the ORM filters): the two
spellings cannot drift apart unnoticed. Other databases (the embedded SQLite)
count with the ORM filters, see metrics._followup_counts.
"""

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import connection

from followups.models import Followup
from reminders.models import OutboundMessage

Status = Followup.Status
OPEN = [str(s) for s in (Status.OPEN, Status.CONTACTED)]
BOOKED = [str(s) for s in (Status.SCHEDULED, Status.DONE)]
LAPSING = [str(Status.LAPSED), *OPEN]
WENT_OUT = [
    str(s)
    for s in (
        OutboundMessage.Status.SENT,
        OutboundMessage.Status.DELIVERED,
        OutboundMessage.Status.UNDELIVERED,
    )
]
RECALL = str(OutboundMessage.Kind.RECALL)


def available() -> bool:
    return connection.vendor == "postgresql"


# The follow-ups a metric can count: due or lapsing in the period, or open and past
# due — one bitmap heap scan over three indexes — and the contacted ones besides.
_DATED = """(f.due_date BETWEEN %(start)s AND %(end)s
    OR (f.status = ANY(%(open)s) AND f.due_date <= %(end)s)
    OR f.lapses_on BETWEEN %(start)s AND %(end)s)"""

_COLUMNS = """f.id, f.location_id, f.followup_type_id, f.status, f.due_date, f.lapses_on,
    f.scheduled_appointment_id, l.time_zone"""

# Contacts from the attribution window before the period to its end, each with its
# day: an attempt counts on its follow-up's location's calendar (the location it
# carries), a message on its own location's. Every follow-up contacted in the
# period is among them, and so is every follow-up booked from recall in it (its
# contact came at most the window before). Both sides read only the locations'
# own rows, from covering indexes (attempt_location_time_idx,
# outbox_recall_location_sent_idx).
_CONTACT = """
    contact AS MATERIALIZED (
        SELECT t.followup_id AS id, true AS attempt, t.staff_id, t.attempted_at AS at,
               (t.attempted_at AT TIME ZONE l.time_zone)::date AS day
          FROM followups_contactattempt t
          JOIN locations_location l ON l.id = t.location_id
         WHERE t.location_id = ANY(%(ids)s)
           AND t.attempted_at >= %(since_contact)s AND t.attempted_at < %(until)s
        UNION ALL
        SELECT m.followup_id, false, NULL, m.sent_at, (m.sent_at AT TIME ZONE l.time_zone)::date
          FROM reminders_outboundmessage m
          JOIN locations_location l ON l.id = m.location_id
         WHERE m.kind = %(recall)s AND m.followup_id IS NOT NULL AND m.status = ANY(%(went_out)s)
           AND m.location_id = ANY(%(ids)s)
           AND m.sent_at >= %(since_contact)s AND m.sent_at < %(until)s
    )"""

# Per contacted follow-up: whether it was contacted in the period, booked within
# the window after a contact (attributed), and after a contact of the period
# (converted). A message about another location's follow-up is grouped here too,
# and left out by the join to `cand`.
_PER = """
    per AS MATERIALIZED (
        SELECT k.id,
               bool_or(k.day BETWEEN %(start)s AND %(end)s) AS contacted,
               bool_or(k.at <= b.booked_at AND k.at >= b.booked_at - %(window)s) AS attributed,
               bool_or(k.day BETWEEN %(start)s AND %(end)s
                       AND k.at <= b.booked_at AND k.at >= b.booked_at - %(window)s) AS converted
          FROM contact k
          LEFT JOIN booking b ON b.id = k.id
         GROUP BY k.id
    )"""


def _ctes() -> str:
    """contact, dated, cand, booking and per (see the module's docstring)."""
    # The contacted follow-ups that are not dated are looked up by id: only those,
    # as most contacted ones are dated too (due, open or lapsing).
    dated = f"""
        SELECT {_COLUMNS}
          FROM followups_followup f JOIN locations_location l ON l.id = f.location_id
         WHERE f.location_id = ANY(%(ids)s) AND {_DATED}"""
    cand = f"""
        SELECT * FROM dated
        UNION ALL
        SELECT {_COLUMNS}
          FROM followups_followup f JOIN locations_location l ON l.id = f.location_id
         WHERE f.id IN (SELECT id FROM contact EXCEPT SELECT id FROM dated)
           AND f.location_id = ANY(%(ids)s)"""
    # Booking times only where they can count (booked, and contacted): a
    # primary-key lookup each, where a join had PostgreSQL hash every visit.
    return f"""
    {_CONTACT},
    dated AS MATERIALIZED ({dated}),
    cand AS MATERIALIZED ({cand}),
    booking AS MATERIALIZED (
        SELECT c.id, b.booked_at, (b.booked_at AT TIME ZONE c.time_zone)::date AS booked_day
          FROM cand c
         CROSS JOIN LATERAL (
               SELECT a.created_at AS booked_at FROM patients_appointment a
                WHERE a.id = c.scheduled_appointment_id) b
         WHERE c.status = ANY(%(booked)s) AND c.id IN (SELECT id FROM contact)
    ),
    {_PER}"""


def _params(scope: Any, since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    return {
        "ids": scope.location_ids,
        "start": scope.start,
        "end": scope.end,
        "since": since,
        "until": until,
        "since_contact": since - scope.attribution,
        "window": scope.attribution,
        "open": OPEN,
        "booked": BOOKED,
        "lapsing": LAPSING,
        "went_out": WENT_OUT,
        "recall": RECALL,
    }


@dataclass
class FollowupTally:
    cells: dict[tuple[int, int], dict[str, Any]]  # (location, type) → every metric
    booked_by_week: dict[int, int]  # the trend's weeks, by index from its anchor
    attempts_by_week: dict[int, int]
    # staff id → (follow-ups they tried in the period, of those booked in the window
    # after their attempt): metrics.staff_conversion.
    staff: dict[int, tuple[int, int]]


def followup_tally(scope: Any, trend: Any, anchor: dt.date) -> FollowupTally:
    """Every follow-up metric of `scope` per (location, type), conversion per staff
    member, and the trend's bookings from recall and attempts per week (`trend`:
    the chart's weeks).

    One statement: the trend's contacts and bookings are the same rows, so the
    contact window spans both (a follow-up contacted only before the period counts
    in none of the period's metrics: each needs a due, lapse, contact or booking
    day in it).
    """
    since, until = scope.utc_window()
    trend_since, trend_until = trend.utc_window()
    params = _params(scope, min(since, trend_since), max(until, trend_until))
    params |= {"trend_start": trend.start, "trend_end": trend.end, "anchor": anchor}
    # "Today" differs between locations around midnight: one clause per local date.
    overdue, lapsed = [], []
    for n, (today, ids) in enumerate(scope.today_groups().items()):
        params |= {f"ids_{n}": ids, f"today_{n}": today, f"lapse_end_{n}": min(scope.end, today)}
        overdue.append(
            f"(c.location_id = ANY(%(ids_{n})s) AND c.status = ANY(%(open)s)"
            f" AND c.due_date <= %(end)s AND c.due_date < %(today_{n})s"
            f" AND c.lapses_on > %(today_{n})s)"
        )
        lapsed.append(
            f"(c.location_id = ANY(%(ids_{n})s) AND c.status = ANY(%(lapsing)s)"
            f" AND c.lapses_on >= %(start)s AND c.lapses_on <= %(lapse_end_{n})s)"
        )
    booked = "(b.booked_day BETWEEN %(start)s AND %(end)s AND p.attributed)"
    week = "(({day}) - %(anchor)s + 7000) / 7 - 1000"
    sql = f"""
        WITH {_ctes()}
        SELECT 'cell', c.location_id, c.followup_type_id,
               count(*) FILTER (WHERE c.due_date BETWEEN %(start)s AND %(end)s),
               count(*) FILTER (WHERE {" OR ".join(overdue) or "false"}),
               count(*) FILTER (WHERE {" OR ".join(lapsed) or "false"}),
               count(*) FILTER (WHERE p.contacted),
               count(*) FILTER (WHERE {booked}),
               count(*) FILTER (WHERE p.contacted AND p.converted),
               sum(greatest(b.booked_day - c.due_date, 0)) FILTER (WHERE {booked})
          FROM cand c
          LEFT JOIN per p ON p.id = c.id
          LEFT JOIN booking b ON b.id = c.id
         GROUP BY c.location_id, c.followup_type_id
        UNION ALL
        SELECT 'booked', {week.format(day="b.booked_day")}, NULL, count(*),
               NULL, NULL, NULL, NULL, NULL, NULL
          FROM booking b
          JOIN per p ON p.id = b.id
         WHERE b.booked_day BETWEEN %(trend_start)s AND %(trend_end)s AND p.attributed
         GROUP BY 2
        UNION ALL
        SELECT 'attempts', {week.format(day="k.day")}, NULL, count(*),
               NULL, NULL, NULL, NULL, NULL, NULL
          FROM contact k
         WHERE k.attempt AND k.day BETWEEN %(trend_start)s AND %(trend_end)s
         GROUP BY 2
        UNION ALL
        SELECT 'staff', k.staff_id, NULL, count(DISTINCT k.id),
               count(DISTINCT k.id) FILTER (
                   WHERE b.booked_at >= k.at AND b.booked_at <= k.at + %(window)s),
               NULL, NULL, NULL, NULL, NULL
          FROM contact k
          LEFT JOIN booking b ON b.id = k.id
         WHERE k.attempt AND k.staff_id IS NOT NULL AND k.day BETWEEN %(start)s AND %(end)s
         GROUP BY k.staff_id
    """
    tally = FollowupTally({}, {}, {}, {})
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for kind, key, followup_type, *values in cursor.fetchall():
            if kind == "cell":
                # A type with nothing to count in the period is not listed (the
                # candidates include follow-ups contacted only before it).
                if any(values):
                    tally.cells[key, followup_type] = dict(zip(METRICS, values, strict=True))
            elif kind == "booked":
                tally.booked_by_week[key] = values[0]
            elif kind == "attempts":
                tally.attempts_by_week[key] = values[0]
            else:
                tally.staff[key] = (values[0], values[1])
    return tally


METRICS = ("due", "overdue", "lapsed", "contacted", "booked", "converted", "overdue_days")
