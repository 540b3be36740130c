"""Staff actions on the outbox and the replies inbox (the Messages page, issue #4).

Both are conditional UPDATEs: two people clicking at once, or a double submit,
record the first click and change nothing the second time.
"""

from django.utils import timezone

from reminders.models import InboundMessage, OutboundMessage


def message_mark_handled(*, message: OutboundMessage) -> bool:
    """Take a failure off "Needs attention"; returns whether this call did it."""
    now = timezone.now()
    done = OutboundMessage.objects.filter(pk=message.pk, handled_at__isnull=True).update(
        handled_at=now, needs_attention=False, updated_at=now
    )
    message.refresh_from_db(fields=["handled_at", "needs_attention", "updated_at"])
    return bool(done)


def reply_mark_read(*, reply: InboundMessage) -> bool:
    """Mark a patient's SMS read; the navigation's unread count drops by one."""
    done = InboundMessage.objects.filter(pk=reply.pk, read_at__isnull=True).update(
        read_at=timezone.now()
    )
    reply.refresh_from_db(fields=["read_at"])
    return bool(done)
