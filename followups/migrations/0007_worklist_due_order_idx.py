"""Today's list in its own order, across locations (issue #7).

The list is ordered by due date. For one location followup_worklist_idx
(location, due date) gives that order; for a manager of 20 locations PostgreSQL
had to join and sort every overdue and due row of the 20 (16,700 at 1×: 54 ms) to
show 25. By due date alone, it walks the index in order, keeps the user's
locations, and stops at the page (1.4 ms).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("followups", "0006_lapsed_bucket_indexes")]

    operations = [
        migrations.AddIndex(
            model_name="followup",
            index=models.Index(
                condition=models.Q(("status__in", ["open", "contacted"])),
                fields=["due_date"],
                name="followup_worklist_due_idx",
            ),
        ),
    ]
