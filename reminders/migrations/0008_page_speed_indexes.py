"""Indexes for the Messages page's tabs (issue #7, benchmarks/pages.py).

"Today's queue" is what is still to go out (planned, queued, sending) before the
end of each location's day, and "Needs attention" the unhandled failures: a few
thousand rows among every message ever sent, which the page otherwise found by
reading the whole outbox of the user's locations.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("reminders", "0007_reports_indexes")]

    operations = [
        migrations.AddIndex(
            model_name="outboundmessage",
            index=models.Index(
                condition=models.Q(("status__in", ["planned", "queued", "sending"])),
                fields=["location", "scheduled_for"],
                name="outbox_pending_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="outboundmessage",
            index=models.Index(
                condition=models.Q(
                    ("handled_at__isnull", True),
                    models.Q(
                        ("needs_attention", True),
                        ("status__in", ["failed", "undelivered"]),
                        _connector="OR",
                    ),
                ),
                fields=["location", "scheduled_for"],
                name="outbox_attention_idx",
            ),
        ),
    ]
