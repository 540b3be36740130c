"""Trigram (GIN) indexes for the search box and the timeline index, on PostgreSQL only.

`search_name LIKE '%fragment%'` and `search_phones LIKE '%digits%'` use these
indexes; SQLite (the embedded run) has no trigram support and scans instead.
"""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations

INDEXES = {
    "patient_search_name_trgm": "search_name",
    "patient_search_phones_trgm": "search_phones",
}


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, column in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON patients_patient "
            f"USING gin ({column} gin_trgm_ops)"
        )
    # The patient timeline reads audit entries by the patient id kept in
    # additional_data (see Patient.get_additional_data), newest first.
    schema_editor.execute(
        "CREATE INDEX IF NOT EXISTS auditlog_patient_timeline_idx ON auditlog_logentry "
        "((additional_data -> 'patient_id'), timestamp DESC)"
    )


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in [*INDEXES, "auditlog_patient_timeline_idx"]:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("patients", "0001_initial"), ("auditlog", "0017_add_actor_email")]

    operations = [
        TrigramExtension(),
        migrations.RunPython(create_indexes, drop_indexes),
    ]
