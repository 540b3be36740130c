"""Indexes the recall dashboard's reads need (reports/metrics.py, issue #7).

Plain SQL (valid on PostgreSQL and SQLite) with no model state: the reports app
owns these reads, and the model keeps describing what its own code needs.
"""

from django.db import migrations

INDEXES = {
    # A reminder counts on the day it went out or, never sent, the day it was due:
    # reports.metrics.message_rows ranges over exactly this expression, and reads
    # only these columns (an index-only scan).
    "outbox_location_moment_idx": (
        "reminders_outboundmessage (location_id, (COALESCE(sent_at, scheduled_for)), "
        "kind, status, sent_at, scheduled_for)"
    ),
    # "Was this visit reminded?", once per visit of the period.
    "outbox_reminded_idx": (
        "reminders_outboundmessage (appointment_id) WHERE kind = 'appointment_reminder' "
        "AND status IN ('sent', 'delivered', 'undelivered')"
    ),
    # Messages held back, by reason (suppressed ones never went out: their moment
    # is when they were due).
    "outbox_suppressed_idx": (
        "reminders_outboundmessage (location_id, (COALESCE(sent_at, scheduled_for))) "
        "WHERE status = 'suppressed'"
    ),
    # Recall messages about a follow-up that went out in a time window; with the
    # columns the dashboard reads, so the scan needs no table rows.
    "outbox_recall_sent_idx": (
        "reminders_outboundmessage (sent_at, followup_id, location_id, status) "
        "WHERE kind = 'recall' AND followup_id IS NOT NULL"
    ),
    # Replies received in the period.
    "inbound_location_received_idx": "reminders_inboundmessage (location_id, received_at)",
}


class Migration(migrations.Migration):
    dependencies = [("reminders", "0006_merged_messages")]

    operations = [
        migrations.RunSQL(
            sql=f"CREATE INDEX IF NOT EXISTS {name} ON {target}",
            reverse_sql=f"DROP INDEX IF EXISTS {name}",
        )
        for name, target in INDEXES.items()
    ] + [
        # Statistics for the expression index, without which PostgreSQL guesses its
        # selectivity (a thousandth of the real row count) until autovacuum runs.
        migrations.RunSQL("ANALYZE reminders_outboundmessage", migrations.RunSQL.noop)
    ]
