"""Recall messages that went out, by location first (issue #7).

outbox_recall_sent_idx led with the send time, so the dashboard's "who was
contacted" read every location's recall messages of the period and kept the
user's: 280,000 rows at 10× for a manager's 28,000. Led by the location, each of
the user's locations is one range. Plain SQL valid on PostgreSQL and SQLite, like
0007.
"""

from django.db import migrations

NEW = (
    "CREATE INDEX IF NOT EXISTS outbox_recall_location_sent_idx ON reminders_outboundmessage "
    "(location_id, sent_at, followup_id, status) "
    "WHERE kind = 'recall' AND followup_id IS NOT NULL"
)
OLD = (
    "CREATE INDEX IF NOT EXISTS outbox_recall_sent_idx ON reminders_outboundmessage "
    "(sent_at, followup_id, location_id, status) "
    "WHERE kind = 'recall' AND followup_id IS NOT NULL"
)


class Migration(migrations.Migration):
    dependencies = [("reminders", "0009_suppressed_reasons_covering")]

    operations = [
        migrations.RunSQL(NEW, "DROP INDEX IF EXISTS outbox_recall_location_sent_idx"),
        migrations.RunSQL("DROP INDEX IF EXISTS outbox_recall_sent_idx", OLD),
    ]
