"""Indexes the recall dashboard's reads need (reports/metrics.py, issue #7).

Plain SQL (valid on PostgreSQL and SQLite) with no model state: the reports app
owns these reads, and the models keep describing what their own code needs.
"""

from django.db import migrations

INDEXES = {
    # Attempts in a time window (contacted, attributed, trends, staff conversion);
    # followup_id makes them index-only.
    "attempt_time_idx": "followups_contactattempt (attempted_at, followup_id)",
    # Follow-ups due, or lapsing, on a day of the period, whatever their status
    # (followup_worklist_idx covers only open ones).
    "followup_due_idx": "followups_followup (location_id, due_date)",
    "followup_lapse_idx": "followups_followup (location_id, lapses_on)",
}


class Migration(migrations.Migration):
    dependencies = [("followups", "0001_initial")]

    operations = [
        migrations.RunSQL(
            sql=f"CREATE INDEX IF NOT EXISTS {name} ON {target}",
            reverse_sql=f"DROP INDEX IF EXISTS {name}",
        )
        for name, target in INDEXES.items()
    ]
