"""Derive the recall dashboard's kept visit flags again from their sources (reports.visits).

The triggers keep the rows exact; this is for a database restored or loaded
around them (pg_restore with triggers disabled, say). Writers to visits, the
outbox and the replies wait while it runs.
"""

import time

from django.core.management.base import BaseCommand, CommandError

from reports import visits
from reports.models import VisitFlags


class Command(BaseCommand):
    help = "Derive the recall dashboard's kept visit flags again (PostgreSQL)."

    def handle(self, *args, **options):
        if not visits.available():
            raise CommandError("Only PostgreSQL keeps these rows; this database counts live.")
        started = time.perf_counter()
        visits.rebuild()
        self.stdout.write(
            f"Visit flags rebuilt: {VisitFlags.objects.count():,} rows "
            f"in {time.perf_counter() - started:.1f} s."
        )
