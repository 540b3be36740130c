"""Index for the Today worklist's bucket counts (issue #7, benchmarks/pages.py).

followup_worklist_idx covers open and contacted follow-ups (the rows Today lists);
the counts also need lapsed ones, which it leaves out, so they scanned every
follow-up of the user's locations, closed ones included.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("followups", "0002_reports_indexes")]

    operations = [
        migrations.AddIndex(
            model_name="followup",
            index=models.Index(
                condition=models.Q(("status__in", ["open", "contacted", "lapsed"])),
                fields=["location", "due_date"],
                name="followup_active_idx",
            ),
        ),
    ]
