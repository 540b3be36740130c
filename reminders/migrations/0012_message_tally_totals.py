"""A suppressed message's count also in its status's total (reason blank), with
an index of the totals alone and one of the suppressed counts (issue #7). See
reminders.tallies.

The triggers' functions are replaced and the outbox counted again in the new
form; the reverse cannot restore the old form's functions, so it is not offered.
"""

from django.db import migrations, models

from reminders import tallies


def recount(apps, schema_editor):
    tallies.reinstall(schema_editor)


class Migration(migrations.Migration):

    dependencies = [
        ("reminders", "0011_message_tallies"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="messagetally",
            index=models.Index(
                condition=models.Q(("reason", "")),
                fields=["location", "day"],
                include=("kind", "status", "n"),
                name="messagetally_total_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="messagetally",
            index=models.Index(
                condition=models.Q(("status", "suppressed")),
                fields=["location", "day"],
                include=("kind", "reason", "n"),
                name="messagetally_suppressed_idx",
            ),
        ),
        # After the indexes: the recount's rows leave deferred foreign-key checks
        # pending, and CREATE INDEX refuses a table with pending trigger events.
        migrations.RunPython(recount, elidable=False),
    ]
