"""Indexes for the patient list's order and Today's "booked already?" (issue #7).

- patient_name_idx: the list is ordered by name; for a user of many locations it
  is read in that order and stops after a page instead of sorting every patient.
- appointment_booked_idx: scheduled and confirmed visits only, a few percent of
  all visits; Today excludes follow-ups whose patient has a satisfying booking.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("patients", "0006_reports_indexes")]

    operations = [
        migrations.AddIndex(
            model_name="appointment",
            index=models.Index(
                condition=models.Q(("status__in", ["scheduled", "confirmed"])),
                fields=["patient", "start"],
                include=["appointment_type"],
                name="appointment_booked_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="patient",
            index=models.Index(fields=["last_name", "first_name", "id"], name="patient_name_idx"),
        ),
    ]
