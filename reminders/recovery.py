"""Putting back outbox rows whose send task the broker lost (issue #4).

The dispatcher moves a row to "queued" and only then, after commit, publishes its
send task. If Redis restarts without persistence (or is flushed) before a worker
takes the task, the row stays "queued" for ever: the dispatcher only claims
"planned" rows and no task will ever claim it. `requeue_stale_queued` hands such
rows back to the dispatcher.

It cannot cause a second send. A worker sends only after its own conditional
UPDATE queued → sending, and a row moves out of "queued" at most once per claim:
if the old task does turn up after all, either it finds the row "planned" (and
skips it) or it wins the claim and the fresh task finds the row taken.
"""

import datetime as dt
import logging

from django.utils import timezone

from reminders.models import OutboundMessage

logger = logging.getLogger(__name__)

Status = OutboundMessage.Status


def requeue_stale_queued(*, older_than: dt.timedelta = dt.timedelta(minutes=10)) -> int:
    """Move rows "queued" for longer than `older_than` back to "planned"; returns how many.

    "Longer" counts from the dispatcher's claim (it sets `updated_at`). A task that
    is merely late in a long queue makes its row go round once more, never twice out.
    """
    now = timezone.now()
    moved = OutboundMessage.objects.filter(
        status=Status.QUEUED, updated_at__lt=now - older_than
    ).update(status=Status.PLANNED, updated_at=now)
    if moved:
        logger.warning("Requeued %d outbox rows whose send task never ran.", moved)
    return moved
