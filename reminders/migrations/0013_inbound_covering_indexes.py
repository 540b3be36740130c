"""Replies: the dashboard's and the navigation badge's reads from indexes alone (issue #7).

Plain SQL (valid on PostgreSQL and SQLite) with no model state, as in 0007.

- The dashboard's replies per location (reports.metrics.replies_by_location)
  read the period's range of `inbound_location_received_idx` and then each
  reply's row for its action and read time: 27,000 heap pages for a
  200-location group's four weeks. The index now carries both.
- The navigation's unread badge (reminders.selectors.unread_reply_count, on
  every page) scanned every reply: 190,000 at 10×. The unread inbox replies have
  an index of their own.
"""

from django.db import migrations

COVERING = (
    "CREATE INDEX IF NOT EXISTS inbound_location_received_idx "
    "ON reminders_inboundmessage (location_id, received_at, action, read_at)"
)
PLAIN = (
    "CREATE INDEX IF NOT EXISTS inbound_location_received_idx "
    "ON reminders_inboundmessage (location_id, received_at)"
)


class Migration(migrations.Migration):
    dependencies = [("reminders", "0012_message_tally_totals")]

    operations = [
        migrations.RunSQL(
            sql=["DROP INDEX IF EXISTS inbound_location_received_idx", COVERING],
            reverse_sql=["DROP INDEX IF EXISTS inbound_location_received_idx", PLAIN],
        ),
        migrations.RunSQL(
            sql=(
                "CREATE INDEX IF NOT EXISTS inbound_unread_idx ON reminders_inboundmessage "
                "(location_id) WHERE action = 'inbox' AND read_at IS NULL"
            ),
            reverse_sql="DROP INDEX IF EXISTS inbound_unread_idx",
        ),
    ]
