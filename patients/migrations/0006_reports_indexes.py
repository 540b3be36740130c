"""Index the recall dashboard's reads need (reports/metrics.py, issue #7).

Plain SQL (valid on PostgreSQL and SQLite) with no model state: the reports app
owns this read, and the model keeps describing what its own code needs.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("patients", "0005_merged_into_partial_index")]

    operations = [
        # Visits recorded (booked) in a time window: "booked from recall" counts a
        # follow-up on the day its visit was recorded.
        migrations.RunSQL(
            sql="CREATE INDEX IF NOT EXISTS appointment_created_idx "
            "ON patients_appointment (created_at)",
            reverse_sql="DROP INDEX IF EXISTS appointment_created_idx",
        ),
    ]
