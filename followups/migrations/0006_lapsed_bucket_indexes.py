"""Indexes for Today's "Lapsed" tab (issue #7).

The tab holds follow-ups marked lapsed, and open or contacted ones already past
their "lapsed after" date (the nightly job has not run yet). Neither had an index
of its own, so PostgreSQL read every follow-up of the location and, misjudging
how many would remain, hashed every patient of the practice to join them (23 ms of
the front desk's 30 at 1×; it grows with the practice). With these two the tab is
two small index ranges (a BitmapOr).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("followups", "0005_attempt_location_required")]

    operations = [
        migrations.AddIndex(
            model_name="followup",
            index=models.Index(
                condition=models.Q(("status", "lapsed")),
                fields=["location", "due_date"],
                name="followup_lapsed_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="followup",
            index=models.Index(
                condition=models.Q(("status__in", ["open", "contacted"])),
                fields=["location", "lapses_on"],
                name="followup_lapsing_idx",
            ),
        ),
    ]
