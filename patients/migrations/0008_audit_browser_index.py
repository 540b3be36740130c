"""The audit-trail browser's order, as an index (issue #7).

The admin lists entries newest first with the id as tie-breaker (timestamp DESC,
id DESC). With an index on the timestamp alone PostgreSQL had to sort every entry
sharing the newest timestamp — a bulk import or a scripted load writes thousands
at one instant (98,000 in the 10× data set: 330 ms for the first page). With both
columns the first page is the index's first 100 entries. Plain SQL valid on
PostgreSQL and SQLite; auditlog's own table, so no model state.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("patients", "0007_page_speed_indexes")]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS auditlog_browser_idx "
            'ON auditlog_logentry ("timestamp" DESC, id DESC)',
            "DROP INDEX IF EXISTS auditlog_browser_idx",
        )
    ]
