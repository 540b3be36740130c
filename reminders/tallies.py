"""The outbox counted per location and local day, kept by PostgreSQL (issue #7).

The recall dashboard counts messages by location, day, kind, status and — for
those not sent — reason. Counting the outbox's rows for a period read every row
of it (116,000 for a 20-location group's eight weeks, a third of the page's
time), and ten times that at ten times the scale. Here the counts are kept as
the outbox changes, so a period costs its locations × days, not its messages:

- `MessageTallyChange` takes what each statement on the outbox changed: three
  statement-level triggers (insert, update, delete) read the statement's
  transition tables and insert one row per (location, day, kind, status,
  reason) it added to or took from. Insert-only, so concurrent senders never
  wait on each other's counters; an update that moves no count (a provider id,
  `updated_at`) adds nothing.
- `compact()` (the beat task `reminders.tasks.compact_message_tallies`, every
  minute) moves those rows into `MessageTally`, one row per key.
- Readers add both tables up (`TOTALS`, `SUPPRESSED`), in one statement and so one snapshot:
  a compaction that commits meanwhile is seen whole or not at all.

A message not sent (status "suppressed") is counted twice: in its status's
total, whose reason is blank like every other status's, and under its reason
(when it has one). Readers of totals read only the blank-reason rows
(`TOTALS`, `messagetally_total_idx`): at 10× the reasons were 135,000 of a
200-location group's 186,000 rows for eight weeks. "Not sent, by reason" reads
the suppressed rows (`SUPPRESSED`) and counts the total's remainder as "no
reason".

The day is the location's calendar day of `COALESCE(sent_at, scheduled_for)`,
as in reports.metrics.message_rows. A location whose time zone changes is
counted again (a row trigger on locations_location); TRUNCATE of the outbox
empties both tables. `rebuild()` (`manage.py rebuild_message_tallies`) counts
everything again from the outbox. tests/reminders/test_tallies.py checks the
counts against the outbox's rows after every kind of write.

The embedded SQLite default has neither triggers nor rows here: the dashboard
counts the outbox itself there (`available()`).
"""

from django.db import connection, transaction

CHANGE = "reminders_messagetallychange"
TALLY = "reminders_messagetally"
KEY = "location_id, day, kind, status, reason"

# Only a message not sent keeps its reason in the counts ("Not sent, by reason"),
# in a row of its own beside its status's total (reason blank); the reason of a
# cancelled or undelivered one would only split its counts. `_counted_rows` gives
# each message of `rows` its keys: one, or two for a suppressed one with a reason.
_KEY_OF = """m.location_id,
       (COALESCE(m.sent_at, m.scheduled_for) AT TIME ZONE l.time_zone)::date,
       m.kind, m.status, r.reason"""


def _counted_rows(rows: str, where: str = "true") -> str:
    return f"""{rows} m JOIN locations_location l ON l.id = m.location_id
     CROSS JOIN LATERAL (VALUES (''),
         (CASE WHEN m.status = 'suppressed' THEN NULLIF(m.reason, '') END)) r (reason)
     WHERE r.reason IS NOT NULL AND {where}"""


def _counted(rows: str, sign: str) -> str:
    return f"""SELECT {_KEY_OF}, {sign}count(*)
      FROM {_counted_rows(rows)}
     GROUP BY 1, 2, 3, 4, 5"""


FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION reminders_outbox_tally() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {CHANGE} ({KEY}, n) {_counted("new_rows", "")};
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {CHANGE} ({KEY}, n) {_counted("old_rows", "-")};
    ELSE
        INSERT INTO {CHANGE} ({KEY}, n)
        SELECT {KEY}, sum(n) FROM (
            {_counted("new_rows", "")}
            UNION ALL
            {_counted("old_rows", "-")}
        ) moved (location_id, day, kind, status, reason, n)
        GROUP BY 1, 2, 3, 4, 5
        HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION reminders_outbox_tally_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- DELETE, not TRUNCATE: a TRUNCATE of every table at once (Django's flush)
    -- has these in use, and TRUNCATE refuses a table in use.
    DELETE FROM {TALLY};
    DELETE FROM {CHANGE};
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION reminders_location_tally() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {TALLY} WHERE location_id = NEW.id;
    DELETE FROM {CHANGE} WHERE location_id = NEW.id;
    INSERT INTO {CHANGE} ({KEY}, n)
    SELECT {_KEY_OF}, count(*)
      FROM {_counted_rows("reminders_outboundmessage", "m.location_id = NEW.id")}
     GROUP BY 1, 2, 3, 4, 5;
    RETURN NULL;
END
$$;
"""

TRIGGERS = """
CREATE OR REPLACE TRIGGER reminders_outbox_tally_insert
    AFTER INSERT ON reminders_outboundmessage REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminders_outbox_tally();
CREATE OR REPLACE TRIGGER reminders_outbox_tally_update
    AFTER UPDATE ON reminders_outboundmessage
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminders_outbox_tally();
CREATE OR REPLACE TRIGGER reminders_outbox_tally_delete
    AFTER DELETE ON reminders_outboundmessage REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reminders_outbox_tally();
CREATE OR REPLACE TRIGGER reminders_outbox_tally_truncate
    AFTER TRUNCATE ON reminders_outboundmessage
    FOR EACH STATEMENT EXECUTE FUNCTION reminders_outbox_tally_truncate();
CREATE OR REPLACE TRIGGER reminders_location_tally
    AFTER UPDATE OF time_zone ON locations_location
    FOR EACH ROW WHEN (OLD.time_zone IS DISTINCT FROM NEW.time_zone)
    EXECUTE FUNCTION reminders_location_tally();
"""

DROP = """
DROP TRIGGER IF EXISTS reminders_outbox_tally_insert ON reminders_outboundmessage;
DROP TRIGGER IF EXISTS reminders_outbox_tally_update ON reminders_outboundmessage;
DROP TRIGGER IF EXISTS reminders_outbox_tally_delete ON reminders_outboundmessage;
DROP TRIGGER IF EXISTS reminders_outbox_tally_truncate ON reminders_outboundmessage;
DROP TRIGGER IF EXISTS reminders_location_tally ON locations_location;
DROP FUNCTION IF EXISTS reminders_outbox_tally();
DROP FUNCTION IF EXISTS reminders_outbox_tally_truncate();
DROP FUNCTION IF EXISTS reminders_location_tally();
"""

# Every count, from the outbox's rows (the migrations' backfill and rebuild()),
# written in the readers' order (location, day): a period's rows share pages.
_RECOUNT = f"""
INSERT INTO {TALLY} ({KEY}, n)
SELECT {_KEY_OF}, count(*)
  FROM {_counted_rows("reminders_outboundmessage")}
 GROUP BY 1, 2, 3, 4, 5
 ORDER BY 1, 2
"""

# Everything counted again, in one transaction: the outbox's writers wait, so
# nothing changes between the recount and its end; DELETE, not TRUNCATE, which
# refuses tables with deferred checks pending (rebuild() and migration 0012).
_COUNT_AGAIN = (
    "LOCK TABLE reminders_outboundmessage IN SHARE MODE",
    f"DELETE FROM {TALLY}",
    f"DELETE FROM {CHANGE}",
    _RECOUNT,
)

# The pending changes into the tally, key by key. Ordered, so two compactions at
# once lock the tally's rows in the same order and never deadlock.
_COMPACT = f"""
WITH moved AS (DELETE FROM {CHANGE} RETURNING {KEY}, n)
INSERT INTO {TALLY} AS t ({KEY}, n)
SELECT {KEY}, sum(n) FROM moved
 GROUP BY 1, 2, 3, 4, 5
HAVING sum(n) <> 0
 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT ({KEY}) DO UPDATE SET n = t.n + EXCLUDED.n
"""


# The counts of a query, as one relation with the columns of KEY and n: the
# tally and its pending changes, the rows that `where` keeps.
def _source(where: str) -> str:
    return f"""(SELECT {KEY}, n FROM {TALLY}
     WHERE location_id = ANY(%(ids)s) AND day BETWEEN %(first)s AND %(last)s
       AND kind = ANY(%(kinds)s) AND {where}
    UNION ALL
    SELECT {KEY}, n FROM {CHANGE}
     WHERE location_id = ANY(%(ids)s) AND day BETWEEN %(first)s AND %(last)s
       AND kind = ANY(%(kinds)s) AND {where})"""


# Each status's total (reason blank: messagetally_total_idx).
TOTALS = _source("reason = ''")
# The messages not sent: their total (reason blank) and their count per reason.
SUPPRESSED = _source("status = 'suppressed'")


def available() -> bool:
    """Whether the database keeps the counts (PostgreSQL; not the embedded SQLite)."""
    return connection.vendor == "postgresql"


def install(schema_editor) -> None:  # type: ignore[no-untyped-def]
    """Create the triggers and count the outbox as it stands (migration 0011)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTIONS)
    schema_editor.execute(TRIGGERS)
    schema_editor.execute(_RECOUNT)


def reinstall(schema_editor) -> None:  # type: ignore[no-untyped-def]
    """Replace the triggers' functions and count the outbox again (migration 0012)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTIONS)
    for statement in _COUNT_AGAIN:
        schema_editor.execute(statement)


def uninstall(schema_editor) -> None:  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


def compact() -> int:
    """Move the pending changes into the tally; how many keys it touched."""
    if not available():
        return 0
    with connection.cursor() as cursor:
        cursor.execute(_COMPACT)
        touched = cursor.rowcount
        # Keys whose messages all moved on (yesterday's "planned", say): gone.
        cursor.execute(f"DELETE FROM {TALLY} WHERE n = 0")
    return touched


def rebuild() -> None:
    """Count every message again, from the outbox (after a restore, say)."""
    if not available():
        return
    with transaction.atomic(), connection.cursor() as cursor:
        for statement in _COUNT_AGAIN:
            cursor.execute(statement)
