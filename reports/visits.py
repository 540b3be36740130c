"""Each visit's reminder facts kept in one narrow table by PostgreSQL (issue #7).

The reminder table of the recall dashboard counts the period's visits by what
holds of each: a reminder went out about it, the patient confirmed it by SMS,
its outcome is known (completed or no-show, already begun), it was a no-show
(reports.metrics.APPOINTMENT_METRICS). Counting from the sources took two index
probes per visit — the outbox's reminders, the replies' confirmations — and a
heap read of the visit itself: 114,000 visits, 228,000 probes and 65,000 heap
pages for the four weeks of a 200-location group, 566 ms of its dashboard.

`reports_visitflags` (reports.models.VisitFlags) holds one row per visit with
those facts already decided, and one index holds every column the count reads,
by location and local day: the count is one index-only range.

The rows are kept by triggers, in the statement that changes their sources:

- visits: inserts and deletes statement-level (a bulk load is one join); an
  update row by row, and only where location, start or status changed (checked
  in C before any function runs: a reschedule's `updated_at`, a provider, a
  type change write nothing here);
- the outbox and the replies, statement-level through transition tables: only
  the visits whose reminder (an appointment reminder that went out: sent,
  delivered or undelivered) or SMS confirmation came or went are decided again;
  a delivery receipt after "sent" changes nothing and writes nothing;
- a location's change of time zone re-derives its visits' days;
- TRUNCATE of a source clears its share.

Concurrency: deciding a visit's flags again first locks its row, then reads the
sources in a new statement. Two transactions that change different messages
about one visit take turns, and the second decides from a snapshot that holds
the first's commit: neither can leave the other's change out. Rows are locked
in visit order within a statement; a transaction that changes reminders of two
visits in two statements while another does the reverse can deadlock, and
PostgreSQL then cancels one of them. The dispatcher records a batch in one
statement; were its finishing update cancelled, its rows would stay "sending"
until reminders.reconcile asks the provider — nothing is sent twice.

`rebuild()` (`manage.py rebuild_visit_flags`) derives every row again from the
sources, for a database restored around the triggers. tests/reports/test_visits.py
checks the kept rows against a recount in Python after every kind of write, and
tests/reports/test_onepass.py the dashboard's visit counts against the
drill-down lists' ORM filters (reports.metrics.appointment_filters).

The embedded SQLite default keeps nothing here; the dashboard counts the visits
themselves there (available()).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction

# Whether the database keeps the rows: PostgreSQL, as for the contacts (not SQLite).
from reports.contacts import available, drop_statement_triggers, statement_triggers

TABLE = "reports_visitflags"
COLUMNS = "appointment_id, location_id, day, start, status, reminded, confirmed"
# Keep in step with reports.metrics.WENT_OUT.
WENT_OUT = "('sent', 'delivered', 'undelivered')"

# What a message or a reply decides about a visit: the visit it is a reminder
# that went out / an SMS confirmation of, else null.
_REMINDER_OF = (
    "CASE WHEN {m}.kind = 'appointment_reminder' AND {m}.status IN "
    + WENT_OUT
    + " THEN {m}.appointment_id END"
)
_CONFIRMATION_OF = "CASE WHEN {r}.action = 'confirmed' THEN {r}.confirmed_appointment_id END"

# Whether the visit whose id is `{visit}` was reminded / confirmed.
_REMINDED = (
    """EXISTS (
    SELECT 1 FROM reminders_outboundmessage m
     WHERE m.appointment_id = {visit} AND m.kind = 'appointment_reminder'
       AND m.status IN """
    + WENT_OUT
    + ")"
)
_CONFIRMED = """EXISTS (
    SELECT 1 FROM reminders_inboundmessage r
     WHERE r.confirmed_appointment_id = {visit} AND r.action = 'confirmed')"""


def _derive(rows: str, where: str = "true") -> str:
    """The rows of the visits in `rows`; a visit's day is on its location's calendar."""
    return f"""
SELECT a.id, a.location_id, (a.start AT TIME ZONE l.time_zone)::date, a.start, a.status,
       {_REMINDED.format(visit="a.id")}, {_CONFIRMED.format(visit="a.id")}
  FROM {rows} a JOIN locations_location l ON l.id = a.location_id
 WHERE {where}"""


def _decide(flag: str, exists: str) -> str:
    """Decide `flag` again for the visits in the array `ids` (see Concurrency)."""
    exists = exists.format(visit="v.appointment_id")
    return f"""
        PERFORM 1 FROM {TABLE} WHERE appointment_id = ANY(ids)
         ORDER BY appointment_id FOR UPDATE;
        UPDATE {TABLE} v SET {flag} = {exists}
         WHERE v.appointment_id = ANY(ids) AND v.{flag} IS DISTINCT FROM {exists};"""


def _changed(of: str) -> str:
    """The visits whose fact `of` (a CASE over one row) came or went in this statement."""
    return f"""
        IF TG_OP = 'INSERT' THEN
            SELECT array_agg(DISTINCT x) INTO ids
              FROM (SELECT {of.format(m="n", r="n")} AS x FROM new_rows n) s WHERE x IS NOT NULL;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT array_agg(DISTINCT x) INTO ids
              FROM (SELECT {of.format(m="o", r="o")} AS x FROM old_rows o) s WHERE x IS NOT NULL;
        ELSE
            SELECT array_agg(DISTINCT x) INTO ids
              FROM (SELECT unnest(ARRAY[{of.format(m="o", r="o")}, {of.format(m="n", r="n")}]) AS x
                      FROM old_rows o JOIN new_rows n ON n.id = o.id
                     WHERE {of.format(m="o", r="o")} IS DISTINCT FROM {of.format(m="n", r="n")}) s
             WHERE x IS NOT NULL;
        END IF;
        IF ids IS NULL THEN
            RETURN NULL;
        END IF;"""


_DEFERRED = """
    IF current_setting('reports.visits_deferred', true) = 'on' THEN
        RETURN NULL;  -- a bulk load derives every row once at its end (deferred())
    END IF;"""


def _decider(function: str, of: str, flag: str, exists: str) -> str:
    """A trigger function on the outbox or the replies: the visits whose fact `of`
    came or went in the statement get `flag` decided again."""
    return f"""
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN{_DEFERRED}
    {_changed(of)}
    {_decide(flag, exists)}
    RETURN NULL;
END
$$;
"""


_DECIDERS = _decider("reports_visit_reminders", _REMINDER_OF, "reminded", _REMINDED) + _decider(
    "reports_visit_confirmations", _CONFIRMATION_OF, "confirmed", _CONFIRMED
)

FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION reports_visit_flags() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN{_DEFERRED}
    IF TG_OP = 'INSERT' THEN  -- for each statement
        INSERT INTO {TABLE} ({COLUMNS}) {_derive("new_rows")};
    ELSIF TG_OP = 'DELETE' THEN  -- for each statement
        DELETE FROM {TABLE} v USING old_rows o WHERE v.appointment_id = o.id;
    ELSE  -- for each row whose location, start or status changed
        UPDATE {TABLE} v
           SET location_id = NEW.location_id, start = NEW.start, status = NEW.status,
               day = (NEW.start AT TIME ZONE l.time_zone)::date
          FROM locations_location l
         WHERE l.id = NEW.location_id AND v.appointment_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

{_DECIDERS}
CREATE OR REPLACE FUNCTION reports_visit_days() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {TABLE} SET day = (start AT TIME ZONE NEW.time_zone)::date
     WHERE location_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION reports_truncate_visits() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- DELETE and UPDATE, not TRUNCATE: a TRUNCATE of every table at once (Django's
    -- flush) has this one in use, and TRUNCATE refuses a table in use.
    IF TG_TABLE_NAME = 'reminders_outboundmessage' THEN
        UPDATE {TABLE} SET reminded = false WHERE reminded;
    ELSIF TG_TABLE_NAME = 'reminders_inboundmessage' THEN
        UPDATE {TABLE} SET confirmed = false WHERE confirmed;
    ELSE
        DELETE FROM {TABLE};
    END IF;
    RETURN NULL;
END
$$;
"""


_SOURCES = (
    ("patients_appointment", "reports_visit_flags", ("INSERT", "DELETE")),
    ("reminders_outboundmessage", "reports_visit_reminders", ("INSERT", "UPDATE", "DELETE")),
    ("reminders_inboundmessage", "reports_visit_confirmations", ("INSERT", "UPDATE", "DELETE")),
)

TRIGGERS = "\n".join(
    [
        *(
            statement_triggers(table, function, ops, truncate="reports_truncate_visits")
            for table, function, ops in _SOURCES
        ),
        """
CREATE OR REPLACE TRIGGER reports_visit_flags_update
    AFTER UPDATE ON patients_appointment FOR EACH ROW
    WHEN ((OLD.location_id, OLD.start, OLD.status) IS DISTINCT FROM
          (NEW.location_id, NEW.start, NEW.status))
    EXECUTE FUNCTION reports_visit_flags();
CREATE OR REPLACE TRIGGER reports_visit_days
    AFTER UPDATE OF time_zone ON locations_location
    FOR EACH ROW WHEN (OLD.time_zone IS DISTINCT FROM NEW.time_zone)
    EXECUTE FUNCTION reports_visit_days();
""",
    ]
)


def _drop() -> str:
    sql = drop_statement_triggers(_SOURCES)
    sql.append("DROP TRIGGER IF EXISTS reports_visit_flags_update ON patients_appointment;")
    sql.append("DROP TRIGGER IF EXISTS reports_visit_days ON locations_location;")
    for function in (
        "reports_visit_flags",
        "reports_visit_reminders",
        "reports_visit_confirmations",
        "reports_visit_days",
        "reports_truncate_visits",
    ):
        sql.append(f"DROP FUNCTION IF EXISTS {function}();")
    return "\n".join(sql)


# Every row, from the sources (the migration's backfill and rebuild()).
_DERIVE = f"INSERT INTO {TABLE} ({COLUMNS}) {_derive('patients_appointment')};"


def install(schema_editor) -> None:  # type: ignore[no-untyped-def]
    """Create the triggers and derive the rows as the sources stand (migration)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTIONS)
    schema_editor.execute(TRIGGERS)
    schema_editor.execute(_DERIVE)


def uninstall(schema_editor) -> None:  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_drop())


@contextmanager
def deferred() -> Iterator[None]:
    """For a bulk load on this connection (generate_scale): the triggers keep nothing
    while it runs, and every row is derived once at its end.

    Deciding each COPY's visits as it lands would probe the outbox and the replies
    per visit — with their indexes dropped for the load, a scan of each per
    statement. A session setting, not ALTER TABLE … DISABLE TRIGGER: a load that is
    killed leaves the triggers working for every other connection.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET reports.visits_deferred = 'on'")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET reports.visits_deferred")
    rebuild()


def rebuild() -> None:
    """Derive every row again from the sources (after a restore, say)."""
    if not available():
        return
    with transaction.atomic(), connection.cursor() as cursor:
        # The sources' writers wait: nothing changes between the derivation and its end.
        cursor.execute(
            "LOCK TABLE patients_appointment, reminders_outboundmessage,"
            " reminders_inboundmessage IN SHARE MODE"
        )
        # DELETE, not TRUNCATE, which refuses tables with deferred checks pending.
        cursor.execute(f"DELETE FROM {TABLE}")
        cursor.execute(_DERIVE)


# The flags of reports.metrics.appointment_flags, as the kept row's columns.
FLAGS = {
    "reminded": "reminded",
    "confirmed": "confirmed",
    "outcome": "(status = ANY(%(attended)s) AND start < %(now)s)",
    "no_show": "status = %(no_show)s",
}


def counts_by_location(
    scope: Any, metrics: dict[str, tuple[str, ...]], *, attended: list[str], no_show: str
) -> dict[int, dict[str, int]]:
    """Per location of `scope`, how many of its period's visits hold each metric's
    flags (`metrics`: name → flags, "!flag" = must not hold). One index-only range."""

    def term(name: str) -> str:
        return f"NOT {FLAGS[name[1:]]}" if name.startswith("!") else FLAGS[name]

    columns = ", ".join(
        f"count(*) FILTER (WHERE {' AND '.join(map(term, names))})" for names in metrics.values()
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT location_id, {columns} FROM {TABLE}"
            " WHERE location_id = ANY(%(ids)s) AND day BETWEEN %(start)s AND %(end)s"
            " GROUP BY location_id",
            {
                "ids": scope.location_ids,
                "start": scope.start,
                "end": scope.end,
                "now": scope.now,
                "attended": attended,
                "no_show": no_show,
            },
        )
        return {
            location: dict(zip(metrics, values, strict=True))
            for location, *values in cursor.fetchall()
        }
