"""Recall contacts kept in one narrow table by PostgreSQL (issue #7).

The dashboard's follow-up numbers — contacted, booked from recall, conversion,
days overdue at booking, the chart's bookings and attempts per week and the
staff table — all start from the contacts of the period: staff attempts and
recall messages that went out. Counting them from their own tables meant
reading each contact, converting its time to its location's day, then looking
up its follow-up (type, status) and that follow-up's booked visit (when it was
recorded) one primary key at a time: 40,000 contacts, 20,000 follow-ups and
6,400 visits for a 20-location group's dashboard, most of its 400 ms of SQL.

`reports_recallcontact` (reports.models.RecallContact) holds one row per such
contact with all of that already on it, and one index holds every column the
dashboard reads, by location and day: the statement reads one index range.

The rows are kept by triggers, in the statement that changes their sources:

- attempts (insert, update, delete) and the outbox (insert, delete, and updates
  that change whether or how a message counts: kind, status in or out of
  "went out", sent time, follow-up, location) — statement-level, through
  transition tables, so a bulk write is one join, not a trigger call per row;
- follow-ups: an update of location, type, due date, status or booked visit
  rewrites its contacts' copies (row by row, and only rows where one of those
  changed: the check runs before any function is called); a delete drops them;
- a visit whose `created_at` changes rewrites the booking time of the
  follow-ups booked on it;
- a location's change of time zone re-derives its rows' days;
- TRUNCATE of a source empties its share.

Each row also carries its place among its follow-up's contacts, in order of
time: the previous contact's day, the next one's time and day, and whether all
of them are at the follow-up's own location (`solo`). For such a follow-up the
dashboard finds each count on one row — the first contact of the period, the
last before the booking — instead of grouping its contacts (reports.onepass).
Every write above orders the rows of the follow-ups it touched again
(`reports_contact_chain`).

`rebuild()` (`manage.py rebuild_recall_contacts`) derives every row again from
the sources, for a database restored around the triggers; `deferred()` keeps
the triggers idle for a bulk load on one connection and rebuilds at its end.

Concurrency: a row is derived from the follow-up as the inserting statement sees
it. Logging an attempt locks its follow-up first (followups.services), so an
attempt and a booking of the same follow-up never interleave. A recall message
marked sent by the dispatcher while another transaction books the same
follow-up, both uncommitted at once, can keep the follow-up as it was before
the booking until the follow-up next changes or the rows are rebuilt: locking
the follow-up there as well could deadlock the dispatcher with the replanning
that a booking runs, so it is left as a known, narrow gap. Ordering the rows has
no such gap: writers about one follow-up take an advisory lock for it (one of
1,024, by id) before reading its rows, so the later one sees both new rows.
tests/reports/test_contacts.py checks the kept rows against a recount in Python
after every kind of write, and tests/reports/test_onepass.py the dashboard's
numbers against the drill-down lists' ORM filters.

The embedded SQLite default keeps nothing here; the dashboard counts with the
ORM filters there (reports.onepass.available()).
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction

TABLE = "reports_recallcontact"
COLUMNS = """attempt_id, message_id, followup_id, location_id, followup_location_id,
    followup_type_id, due_date, at, day, staff_id, booked_at, booked_day"""
BOOKED = "('scheduled', 'done')"
WENT_OUT = "('sent', 'delivered', 'undelivered')"

# The follow-up's side of a row: its location, type, due date and — booked — when
# its visit was recorded, on its own location's calendar.
_FOLLOWUP = f"""
  JOIN followups_followup f ON f.id = {{src}}.followup_id
  JOIN locations_location lf ON lf.id = f.location_id
  LEFT JOIN patients_appointment a
    ON a.id = f.scheduled_appointment_id AND f.status IN {BOOKED}"""


def _attempts(rows: str, where: str = "true") -> str:
    """The rows of the attempts in `rows`; an attempt's day is on its location's
    calendar (the location it carries: its follow-up's)."""
    return f"""
SELECT t.id AS attempt_id, NULL::bigint AS message_id, t.followup_id, t.location_id,
       f.location_id AS followup_location_id, f.followup_type_id, f.due_date,
       t.attempted_at AS at, (t.attempted_at AT TIME ZONE l.time_zone)::date AS day,
       t.staff_id, a.created_at AS booked_at,
       (a.created_at AT TIME ZONE lf.time_zone)::date AS booked_day
  FROM {rows} t
  JOIN locations_location l ON l.id = t.location_id
  {_FOLLOWUP.format(src="t")}
 WHERE {where}"""


def _messages(rows: str, where: str = "true") -> str:
    """The rows of the recall messages in `rows` that went out; a message's day is
    on its own location's calendar."""
    return f"""
SELECT NULL::bigint AS attempt_id, m.id AS message_id, m.followup_id, m.location_id,
       f.location_id AS followup_location_id, f.followup_type_id, f.due_date,
       m.sent_at AS at, (m.sent_at AT TIME ZONE l.time_zone)::date AS day,
       NULL::integer AS staff_id, a.created_at AS booked_at,
       (a.created_at AT TIME ZONE lf.time_zone)::date AS booked_day
  FROM {rows} m
  JOIN locations_location l ON l.id = m.location_id
  {_FOLLOWUP.format(src="m")}
 WHERE m.kind = 'recall' AND m.status IN {WENT_OUT} AND m.sent_at IS NOT NULL
   AND ({where})"""


# Whether an outbox row counts, and what of it the kept row depends on: an update
# that changes none of these (a delivery receipt after "sent", a provider id)
# writes nothing here.
_MESSAGE_KEY = """(
    {m}.kind = 'recall' AND {m}.status IN {went_out} AND {m}.sent_at IS NOT NULL
        AND {m}.followup_id IS NOT NULL,
    {m}.kind, {m}.followup_id, {m}.location_id, {m}.sent_at)"""
_MESSAGE_CHANGED = (
    f"{_MESSAGE_KEY.format(m='o', went_out=WENT_OUT)} IS DISTINCT FROM "
    f"{_MESSAGE_KEY.format(m='n', went_out=WENT_OUT)}"
)

_LOCATION_ATTEMPTS = _attempts(
    "followups_contactattempt", "t.location_id = NEW.id OR f.location_id = NEW.id"
)
_LOCATION_MESSAGES = _messages(
    "reminders_outboundmessage", "m.location_id = NEW.id OR f.location_id = NEW.id"
)
_CHANGED_MESSAGES = _messages(
    f"(SELECT n.* FROM new_rows n JOIN old_rows o ON o.id = n.id WHERE {_MESSAGE_CHANGED})"
)

# Each row's place among its follow-up's contacts (reports.models.RecallContact's
# prev_day, next_at, next_day, solo), in order of time, then attempt before
# message, then source id: the same order however the rows were written.
CHAIN = "prev_day, next_at, next_day, solo"
_CHAIN_OF = """lag(day) OVER w AS prev_day, lead(at) OVER w AS next_at,
       lead(day) OVER w AS next_day,
       bool_and(location_id = followup_location_id) OVER (PARTITION BY followup_id) AS solo"""
_CHAIN_ORDER = "WINDOW w AS (PARTITION BY followup_id ORDER BY at, attempt_id, message_id)"


def _chain(where: str) -> str:
    """Set the chain columns of the follow-ups whose rows match `where` (all of each
    follow-up's rows must match), writing only rows whose place changed."""
    return f"""
UPDATE {TABLE} r
   SET prev_day = c.prev_day, next_at = c.next_at, next_day = c.next_day, solo = c.solo
  FROM (SELECT id, {_CHAIN_OF}
          FROM {TABLE} WHERE {where}
        {_CHAIN_ORDER}) c
 WHERE r.id = c.id AND (r.prev_day, r.next_at, r.next_day, r.solo)
       IS DISTINCT FROM (c.prev_day, c.next_at, c.next_day, c.solo)"""


# Writers about one follow-up take one of this many advisory locks (its id modulo
# the count, under the namespace CHAIN_LOCK) before ordering its rows: bounded, so
# a statement touching 50,000 follow-ups takes 1,024 locks, not 50,000.
CHAIN_LOCK, CHAIN_BUCKETS = 7, 1024

_DEFERRED = """
    IF current_setting('reports.contacts_deferred', true) = 'on' THEN
        RETURN NULL;  -- a bulk load derives every row once at its end (deferred())
    END IF;"""

FUNCTIONS = f"""
-- Order the rows of the follow-ups `ids` again. Concurrency: two transactions
-- adding contacts to one follow-up each see only their own new row; so each
-- takes its follow-ups' locks (in order: no deadlock between two statements)
-- and only then reads the rows, in a new statement. The later one waits for the
-- earlier's commit and orders both rows.
CREATE OR REPLACE FUNCTION reports_contact_chain(ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bucket integer;
BEGIN
    IF ids IS NULL OR cardinality(ids) = 0 THEN
        RETURN;
    END IF;
    FOR bucket IN SELECT DISTINCT mod(x, {CHAIN_BUCKETS}) FROM unnest(ids) x ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock({CHAIN_LOCK}, bucket);
    END LOOP;
    {_chain("followup_id = ANY(ids)")};
END
$$;

CREATE OR REPLACE FUNCTION reports_attempt_contacts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    gone bigint[];
    came bigint[];
BEGIN{_DEFERRED}
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        WITH d AS (DELETE FROM {TABLE} r USING old_rows o WHERE r.attempt_id = o.id
                   RETURNING r.followup_id)
        SELECT array_agg(followup_id) INTO gone FROM d;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        WITH i AS (INSERT INTO {TABLE} ({COLUMNS}) {_attempts("new_rows")}
                   RETURNING followup_id)
        SELECT array_agg(followup_id) INTO came FROM i;
    END IF;
    PERFORM reports_contact_chain(gone || came);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION reports_message_contacts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    gone bigint[];
    came bigint[];
BEGIN{_DEFERRED}
    IF TG_OP = 'INSERT' THEN
        WITH i AS (INSERT INTO {TABLE} ({COLUMNS}) {_messages("new_rows")}
                   RETURNING followup_id)
        SELECT array_agg(followup_id) INTO came FROM i;
    ELSIF TG_OP = 'DELETE' THEN
        WITH d AS (DELETE FROM {TABLE} r USING old_rows o WHERE r.message_id = o.id
                   RETURNING r.followup_id)
        SELECT array_agg(followup_id) INTO gone FROM d;
    ELSE
        WITH d AS (DELETE FROM {TABLE} r
                    USING old_rows o JOIN new_rows n ON n.id = o.id
                    WHERE r.message_id = o.id AND {_MESSAGE_CHANGED}
                   RETURNING r.followup_id)
        SELECT array_agg(followup_id) INTO gone FROM d;
        WITH i AS (INSERT INTO {TABLE} ({COLUMNS}) {_CHANGED_MESSAGES}
                   RETURNING followup_id)
        SELECT array_agg(followup_id) INTO came FROM i;
    END IF;
    PERFORM reports_contact_chain(gone || came);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION reports_followup_contacts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN{_DEFERRED}
    IF TG_OP = 'DELETE' THEN  -- for each statement
        DELETE FROM {TABLE} r USING old_rows o WHERE r.followup_id = o.id;
        RETURN NULL;
    END IF;
    -- For each row whose location, type, due date, status or booking changed.
    UPDATE {TABLE} r
       SET followup_location_id = NEW.location_id, followup_type_id = NEW.followup_type_id,
           due_date = NEW.due_date, booked_at = b.booked_at,
           booked_day = (b.booked_at AT TIME ZONE b.time_zone)::date
      FROM (SELECT a.created_at AS booked_at, lf.time_zone
              FROM locations_location lf
              LEFT JOIN patients_appointment a
                ON a.id = NEW.scheduled_appointment_id AND NEW.status IN {BOOKED}
             WHERE lf.id = NEW.location_id) b
     WHERE r.followup_id = NEW.id
       AND (r.followup_location_id, r.followup_type_id, r.due_date, r.booked_at)
           IS DISTINCT FROM (NEW.location_id, NEW.followup_type_id, NEW.due_date, b.booked_at);
    IF OLD.location_id IS DISTINCT FROM NEW.location_id THEN
        PERFORM reports_contact_chain(ARRAY[NEW.id]);  -- its contacts may now be elsewhere
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION reports_appointment_contacts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN{_DEFERRED}
    UPDATE {TABLE} r
       SET booked_at = NEW.created_at,
           booked_day = (NEW.created_at AT TIME ZONE lf.time_zone)::date
      FROM followups_followup f JOIN locations_location lf ON lf.id = f.location_id
     WHERE f.scheduled_appointment_id = NEW.id AND f.status IN {BOOKED}
       AND r.followup_id = f.id;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION reports_location_contacts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN{_DEFERRED}
    WITH d AS (DELETE FROM {TABLE} WHERE location_id = NEW.id OR followup_location_id = NEW.id
               RETURNING followup_id)
    SELECT array_agg(DISTINCT followup_id) INTO ids FROM d;
    INSERT INTO {TABLE} ({COLUMNS})
        {_LOCATION_ATTEMPTS};
    INSERT INTO {TABLE} ({COLUMNS})
        {_LOCATION_MESSAGES};
    PERFORM reports_contact_chain(ids);  -- the same follow-ups' rows, on new days
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION reports_truncate_contacts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN{_DEFERRED}
    -- DELETE, not TRUNCATE: a TRUNCATE of every table at once (Django's flush)
    -- has this one in use, and TRUNCATE refuses a table in use.
    IF TG_TABLE_NAME = 'followups_contactattempt' THEN
        DELETE FROM {TABLE} WHERE attempt_id IS NOT NULL;
    ELSIF TG_TABLE_NAME = 'reminders_outboundmessage' THEN
        DELETE FROM {TABLE} WHERE message_id IS NOT NULL;
    ELSE
        DELETE FROM {TABLE};
    END IF;
    {_chain("true")};  -- the other source's rows lost their neighbours
    RETURN NULL;
END
$$;
"""


def statement_triggers(
    table: str, function: str, ops: tuple[str, ...], truncate: str = "reports_truncate_contacts"
) -> str:
    """Statement-level triggers `{function}_{op}` on `table` with their transition
    tables, and `truncate` after TRUNCATE (also reports.visits)."""
    sql = []
    for op in ops:
        tables = {
            "INSERT": "NEW TABLE AS new_rows",
            "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
            "DELETE": "OLD TABLE AS old_rows",
        }[op]
        sql.append(
            f"CREATE OR REPLACE TRIGGER {function}_{op.lower()} AFTER {op} ON {table}"
            f" REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION {function}();"
        )
    sql.append(
        f"CREATE OR REPLACE TRIGGER {function}_truncate AFTER TRUNCATE ON {table}"
        f" FOR EACH STATEMENT EXECUTE FUNCTION {truncate}();"
    )
    return "\n".join(sql)


_SOURCES = (
    ("followups_contactattempt", "reports_attempt_contacts", ("INSERT", "UPDATE", "DELETE")),
    ("reminders_outboundmessage", "reports_message_contacts", ("INSERT", "UPDATE", "DELETE")),
    ("followups_followup", "reports_followup_contacts", ("DELETE",)),
)

# A follow-up's update is checked row by row, in C, before any function runs: most
# updates (an import's source, a snooze, an assignment) change nothing kept here,
# and a statement-level trigger would have run its query for each of them.
_FOLLOWUP_KEY = (
    "({r}.location_id, {r}.followup_type_id, {r}.due_date, {r}.status,"
    " {r}.scheduled_appointment_id)"
)

TRIGGERS = (
    "\n".join(statement_triggers(*source) for source in _SOURCES)
    + f"""
CREATE OR REPLACE TRIGGER reports_followup_contacts_update
    AFTER UPDATE ON followups_followup FOR EACH ROW
    WHEN ({_FOLLOWUP_KEY.format(r="OLD")} IS DISTINCT FROM {_FOLLOWUP_KEY.format(r="NEW")})
    EXECUTE FUNCTION reports_followup_contacts();
CREATE OR REPLACE TRIGGER reports_appointment_contacts
    AFTER UPDATE OF created_at ON patients_appointment
    FOR EACH ROW WHEN (OLD.created_at IS DISTINCT FROM NEW.created_at)
    EXECUTE FUNCTION reports_appointment_contacts();
CREATE OR REPLACE TRIGGER reports_location_contacts
    AFTER UPDATE OF time_zone ON locations_location
    FOR EACH ROW WHEN (OLD.time_zone IS DISTINCT FROM NEW.time_zone)
    EXECUTE FUNCTION reports_location_contacts();
"""
)


def drop_statement_triggers(sources: tuple[tuple[str, str, tuple[str, ...]], ...]) -> list[str]:
    """DROP statements for what statement_triggers() created, per (table, function, ops)."""
    return [
        f"DROP TRIGGER IF EXISTS {function}_{op.lower()} ON {table};"
        for table, function, ops in sources
        for op in (*ops, "TRUNCATE")
    ]


def _drop() -> str:
    sql = drop_statement_triggers(_SOURCES)
    sql.append("DROP TRIGGER IF EXISTS reports_followup_contacts_update ON followups_followup;")
    sql.append("DROP TRIGGER IF EXISTS reports_appointment_contacts ON patients_appointment;")
    sql.append("DROP TRIGGER IF EXISTS reports_location_contacts ON locations_location;")
    for function in (
        "reports_attempt_contacts",
        "reports_message_contacts",
        "reports_followup_contacts",
        "reports_appointment_contacts",
        "reports_location_contacts",
        "reports_truncate_contacts",
    ):
        sql.append(f"DROP FUNCTION IF EXISTS {function}();")
    sql.append("DROP FUNCTION IF EXISTS reports_contact_chain(bigint[]);")
    return "\n".join(sql)


# Every row, from the sources, as the table first stood (migration 0001's backfill;
# 0003 then ordered them).
_DERIVE = f"""
INSERT INTO {TABLE} ({COLUMNS}) {_attempts("followups_contactattempt")};
INSERT INTO {TABLE} ({COLUMNS}) {_messages("reminders_outboundmessage")};
"""

# Every row with its place among its follow-up's contacts, in one pass (rebuild()).
_DERIVE_ORDERED = f"""
INSERT INTO {TABLE} ({COLUMNS}, {CHAIN})
SELECT s.*, {_CHAIN_OF}
  FROM ({_attempts("followups_contactattempt")}
        UNION ALL {_messages("reminders_outboundmessage")}) s
{_CHAIN_ORDER};
"""


def available() -> bool:
    """Whether the database keeps the rows (PostgreSQL; not the embedded SQLite)."""
    return connection.vendor == "postgresql"


def install(schema_editor) -> None:  # type: ignore[no-untyped-def]
    """Create the triggers and derive the rows as the sources stand (migration)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTIONS)
    schema_editor.execute(TRIGGERS)
    schema_editor.execute(_DERIVE)


def install_chain(schema_editor) -> None:  # type: ignore[no-untyped-def]
    """Replace the functions with those that keep each row's place among its
    follow-up's contacts, and set it on the rows already kept (migration 0003)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTIONS)
    schema_editor.execute(TRIGGERS)
    schema_editor.execute(_chain("true"))


def uninstall(schema_editor) -> None:  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_drop())


@contextmanager
def deferred() -> Iterator[None]:
    """For a bulk load on this connection (generate_scale): the triggers keep nothing
    while it runs, and every row is derived once at its end (as reports.visits).

    A session setting, not ALTER TABLE … DISABLE TRIGGER: a load that is killed
    leaves the triggers working for every other connection.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET reports.contacts_deferred = 'on'")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET reports.contacts_deferred")
    rebuild()


def rebuild() -> None:
    """Derive every row again from the sources (after a restore, say)."""
    if not available():
        return
    with transaction.atomic(), connection.cursor() as cursor:
        # The sources' writers wait: nothing changes between the derivation and its end.
        cursor.execute(
            "LOCK TABLE followups_contactattempt, reminders_outboundmessage,"
            " followups_followup IN SHARE MODE"
        )
        # DELETE, not TRUNCATE, which refuses tables with deferred checks pending.
        cursor.execute(f"DELETE FROM {TABLE}")
        cursor.execute(_DERIVE_ORDERED)
