"""Derive the recall dashboard's kept contacts again from their sources (reports.contacts).

The triggers keep the rows exact; this is for a database restored or loaded
around them (pg_restore with triggers disabled, say). Writers to attempts, the
outbox and follow-ups wait while it runs.
"""

import time

from django.core.management.base import BaseCommand, CommandError

from reports import contacts
from reports.models import RecallContact


class Command(BaseCommand):
    help = "Derive the recall dashboard's kept contacts again (PostgreSQL)."

    def handle(self, *args, **options):
        if not contacts.available():
            raise CommandError("Only PostgreSQL keeps these rows; this database counts live.")
        started = time.perf_counter()
        contacts.rebuild()
        self.stdout.write(
            f"Recall contacts rebuilt: {RecallContact.objects.count():,} rows "
            f"in {time.perf_counter() - started:.1f} s."
        )
