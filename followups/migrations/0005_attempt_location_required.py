"""The attempt's location is required from here on, and indexed with what the
dashboard reads (a separate migration: on PostgreSQL the backfill's deferred
foreign-key checks must run before the column's ALTER)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("followups", "0004_attempt_location")]

    operations = [
        migrations.AlterField(
            model_name="contactattempt",
            name="location",
            field=models.ForeignKey(
                editable=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="locations.location",
            ),
        ),
        migrations.AddIndex(
            model_name="contactattempt",
            index=models.Index(
                fields=["location", "attempted_at", "followup", "staff"],
                name="attempt_location_time_idx",
            ),
        ),
    ]
