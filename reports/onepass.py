"""The follow-up numbers of the dashboard in one statement, on PostgreSQL (issue #7).

reports.metrics defines every follow-up metric once, as a filter on Followup, and
the drill-down lists apply those filters. Counting with them works on any
database, but each metric's contact rule becomes its own subquery and the booking
its own join: 5.7 s of the dashboard's 10 s at 1× in the first measurement.

Here the same definitions are one statement over two sources:

- *due*, *past due and open* and *lapsed* count follow-ups by their own dates
  and status, each an index range per location;
- everything that starts from a contact — contacted, booked from recall,
  converted, days overdue at booking, the chart's bookings and attempts per week
  and the staff table — reads `reports_recallcontact` (reports.contacts): one
  row per attempt or recall message that went out, already carrying its local
  day, its follow-up's location, type and due date, and the time its booking was
  recorded. One index range by location and day, instead of the attempts, the
  outbox, each contacted follow-up and each booked visit looked up in turn
  (410 → 80 ms at 1× for 20 locations; docs/performance.md). Each row knows
  its place among its follow-up's contacts, so a follow-up whose contacts are
  all at its own location is counted from single rows (its first contact of
  the period, its last before the booking) without grouping; only the few
  contacted from elsewhere are grouped per follow-up.

tests/reports/test_onepass.py checks, on randomised histories, that every count
here equals the length of its drill-down list (the ORM filters, which read the
sources themselves): the two spellings, and the kept rows, cannot drift apart
unnoticed. Other databases (the embedded SQLite) count with the ORM filters, see
metrics._followup_counts.
"""

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import connection

from followups.models import Followup
from reports import contacts

Status = Followup.Status
OPEN = [str(s) for s in (Status.OPEN, Status.CONTACTED)]
LAPSING = [str(Status.LAPSED), *OPEN]


def available() -> bool:
    """Whether this statement can run: it reads the contacts the database keeps."""
    return contacts.available()


def _params(scope: Any) -> dict[str, Any]:
    return {
        "ids": scope.location_ids,
        "start": scope.start,
        "end": scope.end,
        # In seconds, not days: `timestamptz - interval` with a day part takes the
        # session's time zone into account (UTC here, so the result is the same),
        # and that lookup was most of the cost of comparing each contact with its
        # booking.
        "window": f"{int(scope.attribution.total_seconds())} seconds",
        "open": OPEN,
        "lapsing": LAPSING,
        "lapsed": str(Status.LAPSED),
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

    One statement. The contacts come from reports_recallcontact by location and
    day: from the attribution window before the first day either the period or
    the chart counts, to the last — every contact a metric can count, as a
    booking is at most the window after its contact — widened by two days each
    side, as a contact's day is on its own location's calendar and the booking's
    on its follow-up's (zones up to 26 hours apart). The exact rules apply to
    the rows read.
    """
    margin = dt.timedelta(days=2)
    first = min(scope.start, trend.start) - scope.attribution - margin
    last = max(scope.end, trend.end) + margin
    params = _params(scope) | {
        "first": first,
        "last": last,
        "trend_start": trend.start,
        "trend_end": trend.end,
        "anchor": anchor,
    }
    # "Today" differs between locations around midnight: one clause per local date.
    # Past due: the range due before today (followup_worklist_idx, which carries
    # the lapse date and type). `lapses_on + 0` keeps PostgreSQL from reading every
    # open follow-up not yet lapsed instead (followup_lapsing_idx), a plan it
    # misjudges as cheaper: 78,000 index entries for 20 locations instead of 16,500.
    overdue, lapsed = [], []
    for n, (today, ids) in enumerate(scope.today_groups().items()):
        params |= {f"ids_{n}": ids, f"today_{n}": today, f"lapse_end_{n}": min(scope.end, today)}
        overdue.append(
            f"(f.location_id = ANY(%(ids_{n})s) AND f.status = ANY(%(open)s)"
            f" AND f.due_date <= %(end)s AND f.due_date < %(today_{n})s"
            f" AND f.lapses_on + 0 > %(today_{n})s)"
        )
        lapsed.append(
            f"(f.location_id = ANY(%(ids_{n})s) AND f.status = ANY(%(lapsing)s)"
            f" AND f.lapses_on >= %(start)s AND f.lapses_on <= %(lapse_end_{n})s)"
        )
    within = "k.at <= k.booked_at AND k.at >= k.booked_at - %(window)s::interval"
    in_period = "k.day BETWEEN %(start)s AND %(end)s"
    week = "(({day}) - %(anchor)s + 7000) / 7 - 1000"
    booked = "(p.booked_day BETWEEN %(start)s AND %(end)s AND p.attributed)"
    # A solo follow-up's contacts are read whole and in order (reports.contacts'
    # chain), so each of its counts is one of its rows, found without grouping:
    # - contacted: its first contact of the period (none before it in the period);
    # - booked: its last contact at or before the booking, if within the window
    #   (an earlier one is further from the booking);
    # - converted: its last contact at or before the booking and the period's end,
    #   if in the period and within the window.
    first_in_period = f"{in_period} AND (k.prev_day IS NULL OR k.prev_day < %(start)s)"
    last_before = "(k.next_at IS NULL OR k.next_at > k.booked_at)"
    attributes = f"{within} AND {last_before}"
    converts = f"{within} AND {in_period} AND ({last_before} OR k.next_day > %(end)s)"
    booked_solo = f"{attributes} AND k.booked_day BETWEEN %(start)s AND %(end)s"
    sql = f"""
        -- Not materialized: each use reads the index range it needs (writing 40,000
        -- rows to a tuplestore first cost more than reading them three times).
        WITH contact AS NOT MATERIALIZED (
            SELECT k.followup_id, k.followup_location_id, k.followup_type_id, k.due_date,
                   k.at, k.day, k.staff_id, k.attempt_id IS NOT NULL AS attempt,
                   k.booked_at, k.booked_day, k.prev_day, k.next_at, k.next_day, k.solo
              FROM reports_recallcontact k
             WHERE k.location_id = ANY(%(ids)s) AND k.day BETWEEN %(first)s AND %(last)s
        ),
        -- Per contacted follow-up with a contact away from its location (few): as
        -- for a solo one, but by grouping its contacts. Contacted in the period,
        -- booked within the window after a contact (attributed), and after one of
        -- the period's (converted). Messages sent here about a follow-up elsewhere
        -- are left out, and so are contacts outside the period that attribute no
        -- booking: they count nowhere.
        per AS MATERIALIZED (
            SELECT k.followup_id, min(k.followup_location_id) AS location_id,
                   min(k.followup_type_id) AS followup_type_id, min(k.due_date) AS due_date,
                   min(k.booked_day) AS booked_day,
                   bool_or({in_period}) AS contacted,
                   bool_or({within}) AS attributed,
                   bool_or({in_period} AND {within}) AS converted
              FROM contact k
             WHERE NOT k.solo AND k.followup_location_id = ANY(%(ids)s)
               AND ({in_period} OR ({within}))
             GROUP BY k.followup_id
        )
        SELECT 'contacts', k.followup_location_id, k.followup_type_id,
               count(*) FILTER (WHERE {first_in_period}), 0,
               count(*) FILTER (WHERE {converts}), NULL
          FROM contact k
         WHERE k.solo AND {in_period}
         GROUP BY k.followup_location_id, k.followup_type_id
        UNION ALL
        -- A solo follow-up booked in the period, by the booking's day
        -- (recallcontact_booked_idx: its last contact before the booking), not by
        -- reading every contact of the window before the period. Its contacts are
        -- all at its own location.
        SELECT 'contacts', k.location_id, k.followup_type_id, 0, count(*), 0,
               sum(greatest(k.booked_day - k.due_date, 0))
          FROM reports_recallcontact k
         WHERE k.location_id = ANY(%(ids)s) AND k.solo
           AND {booked_solo}
         GROUP BY k.location_id, k.followup_type_id
        UNION ALL
        SELECT 'contacts', p.location_id, p.followup_type_id,
               count(*) FILTER (WHERE p.contacted),
               count(*) FILTER (WHERE {booked}),
               count(*) FILTER (WHERE p.contacted AND p.converted),
               sum(greatest(p.booked_day - p.due_date, 0)) FILTER (WHERE {booked})
          FROM per p
         GROUP BY p.location_id, p.followup_type_id
        UNION ALL
        SELECT 'due', f.location_id, f.followup_type_id, count(*), NULL, NULL, NULL
          FROM followups_followup f
         WHERE f.location_id = ANY(%(ids)s) AND f.due_date BETWEEN %(start)s AND %(end)s
         GROUP BY f.location_id, f.followup_type_id
        UNION ALL
        SELECT 'overdue', f.location_id, f.followup_type_id, count(*), NULL, NULL, NULL
          FROM followups_followup f
         WHERE f.location_id = ANY(%(ids)s) AND f.status = ANY(%(open)s)
           AND ({" OR ".join(overdue) or "false"})
         GROUP BY f.location_id, f.followup_type_id
        UNION ALL
        -- Lapsed: marked so (followup_lapsed_on_idx), and open but past the day
        -- they lapse (followup_lapsing_idx), each from its own partial index.
        SELECT 'lapsed', f.location_id, f.followup_type_id, count(*), NULL, NULL, NULL
          FROM followups_followup f
         WHERE f.location_id = ANY(%(ids)s) AND f.lapses_on BETWEEN %(start)s AND %(end)s
           AND f.status = %(lapsed)s AND ({" OR ".join(lapsed) or "false"})
         GROUP BY f.location_id, f.followup_type_id
        UNION ALL
        SELECT 'lapsed', f.location_id, f.followup_type_id, count(*), NULL, NULL, NULL
          FROM followups_followup f
         WHERE f.location_id = ANY(%(ids)s) AND f.lapses_on BETWEEN %(start)s AND %(end)s
           AND f.status = ANY(%(open)s) AND ({" OR ".join(lapsed) or "false"})
         GROUP BY f.location_id, f.followup_type_id
        UNION ALL
        -- By the booking's day (recallcontact_booked_idx: a solo follow-up's last
        -- contact before its booking), not through `contact`, which reads every
        -- contact of the chart's weeks for these few.
        SELECT 'booked', {week.format(day="k.booked_day")}, NULL, count(*), NULL, NULL, NULL
          FROM reports_recallcontact k
         WHERE k.location_id = ANY(%(ids)s) AND k.solo
           AND k.booked_day BETWEEN %(trend_start)s AND %(trend_end)s
           AND {attributes}
         GROUP BY 2
        UNION ALL
        SELECT 'booked', {week.format(day="p.booked_day")}, NULL, count(*), NULL, NULL, NULL
          FROM per p
         WHERE p.booked_day BETWEEN %(trend_start)s AND %(trend_end)s AND p.attributed
         GROUP BY 2
        UNION ALL
        SELECT 'attempts', {week.format(day="k.day")}, NULL, count(*), NULL, NULL, NULL
          FROM contact k
         WHERE k.attempt AND k.day BETWEEN %(trend_start)s AND %(trend_end)s
         GROUP BY 2
        UNION ALL
        SELECT 'staff', k.staff_id, NULL, count(DISTINCT k.followup_id),
               count(DISTINCT k.followup_id) FILTER (
                   WHERE k.booked_at >= k.at AND k.booked_at <= k.at + %(window)s::interval),
               NULL, NULL
          FROM contact k
         WHERE k.attempt AND k.staff_id IS NOT NULL AND {in_period}
         GROUP BY k.staff_id
    """
    tally = FollowupTally({}, {}, {}, {})

    def cell(key: tuple[int, int]) -> dict[str, Any]:
        if key not in tally.cells:
            tally.cells[key] = dict.fromkeys(METRICS, 0) | {"overdue_days": None}
        return tally.cells[key]

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for kind, key, followup_type, *values in cursor.fetchall():
            if kind == "contacts":
                # A type with nothing to count in the period is not listed (the
                # contacts read include some from before it). Solo and grouped
                # follow-ups come as two rows per cell.
                if any(values):
                    contacted, booked_, converted, overdue_days = values
                    c = cell((key, followup_type))
                    c["contacted"] += contacted
                    c["booked"] += booked_
                    c["converted"] += converted
                    if overdue_days is not None:
                        c["overdue_days"] = (c["overdue_days"] or 0) + overdue_days
            elif kind in ("due", "overdue", "lapsed"):
                # Lapsed comes in two rows per cell (marked, and past the day).
                cell((key, followup_type))[kind] += values[0]
            elif kind == "booked":
                tally.booked_by_week[key] = tally.booked_by_week.get(key, 0) + values[0]
            elif kind == "attempts":
                tally.attempts_by_week[key] = values[0]
            else:
                tally.staff[key] = (values[0], values[1])
    return tally


METRICS = ("due", "overdue", "lapsed", "contacted", "booked", "converted", "overdue_days")
