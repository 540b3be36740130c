"""Count the outbox again into the dashboard's message tally (reminders.tallies).

The triggers keep the tally exact; this is for a database restored or loaded
around them (pg_restore with triggers disabled, say). Writers to the outbox wait
while it runs.
"""

import time

from django.core.management.base import BaseCommand, CommandError

from reminders import tallies
from reminders.models import MessageTally


class Command(BaseCommand):
    help = "Count the outbox again into the recall dashboard's message tally (PostgreSQL)."

    def handle(self, *args, **options):
        if not tallies.available():
            raise CommandError("Only PostgreSQL keeps the tally; this database counts live.")
        started = time.perf_counter()
        tallies.rebuild()
        self.stdout.write(
            f"Message tally rebuilt: {MessageTally.objects.count():,} rows "
            f"in {time.perf_counter() - started:.1f} s."
        )
