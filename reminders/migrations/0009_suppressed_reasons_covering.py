"""The recall dashboard's "held back, by reason" from the index alone (issue #7).

outbox_suppressed_idx found the period's suppressed messages, but the reason and
the columns of the period's test live in the table: at 1× that was 11,700 table
pages read for 21,000 messages of four weeks. With them in the index (as key
columns: SQLite has no INCLUDE) the count is an index-only scan. Plain SQL valid
on PostgreSQL and SQLite, like 0007.
"""

from django.db import migrations

NEW = (
    "CREATE INDEX IF NOT EXISTS outbox_suppressed_reason_idx ON reminders_outboundmessage "
    "(location_id, (COALESCE(sent_at, scheduled_for)), kind, reason, sent_at, scheduled_for) "
    "WHERE status = 'suppressed'"
)
OLD = (
    "CREATE INDEX IF NOT EXISTS outbox_suppressed_idx ON reminders_outboundmessage "
    "(location_id, (COALESCE(sent_at, scheduled_for))) WHERE status = 'suppressed'"
)


class Migration(migrations.Migration):
    dependencies = [("reminders", "0008_page_speed_indexes")]

    operations = [
        migrations.RunSQL(NEW, "DROP INDEX IF EXISTS outbox_suppressed_reason_idx"),
        migrations.RunSQL("DROP INDEX IF EXISTS outbox_suppressed_idx", OLD),
    ]
