"""Rows stuck in "sending": ask the provider before anything is sent again (issue #4).

A worker that dies between the provider's API call and the UPDATE recording its
answer — or a 5xx from Twilio, which may have taken the message all the same —
leaves a row in "sending" and nobody knows whether the patient got it. Resending
blindly risks a duplicate; never resending loses the reminder. Twilio can be
asked: found means it was sent (record its sid), not found means Twilio never got
it (send again). A mail server cannot be asked, so an email in doubt fails for a
person to look at and is never resent.
"""

import datetime as dt
from collections import Counter

from django.utils import timezone

from reminders.models import OutboundMessage
from reminders.senders import SendError, sms_sender

Status = OutboundMessage.Status
# Clocks differ between us and Twilio: look a little before the row existed.
CLOCK_MARGIN = dt.timedelta(minutes=2)
RESENDING = "Reconciled: provider had no record; resending"
EMAIL_IN_DOUBT = "Unknown whether the mail server accepted it; not resent"

# What Twilio says became of a message it holds; anything earlier counts as sent.
_PROVIDER_STATUS = {
    "delivered": Status.DELIVERED,
    "undelivered": Status.UNDELIVERED,
    "failed": Status.FAILED,
}


def reconcile_message(message: OutboundMessage) -> str:
    """Settle one row in "sending"; returns its new status.

    "sending" means Twilio could not be asked (try again later); "skipped" means
    the row left "sending" meanwhile. Twilio filters by the date it sent a
    message, and one it has only queued has none yet, so call this for sends a
    few minutes old (as `reconcile_stale_sending` does), not right after a 5xx.
    """
    # The list may have taken a while to reach this row; act on what it is now.
    message.refresh_from_db()
    if message.status != Status.SENDING:
        return "skipped"
    if message.channel != OutboundMessage.Channel.SMS:
        return _settle(
            message, status=Status.FAILED, error_message=EMAIL_IN_DOUBT, needs_attention=True
        )
    # Sids other rows already hold: of two identical messages, each row claims its own.
    taken = (
        OutboundMessage.objects.filter(to=message.to, body=message.body)
        .exclude(pk=message.pk)
        .exclude(provider_id="")
        .values_list("provider_id", flat=True)
    )
    try:
        found = sms_sender().find_sent(
            to=message.to,
            sender=message.sender,
            body=message.body,
            # Every send of this row came after it was created.
            since=message.created_at - CLOCK_MARGIN,
            exclude=set(taken),
        )
    except SendError:
        return str(Status.SENDING)
    if found is None:
        return _settle(
            message,
            status=Status.PLANNED,
            scheduled_for=timezone.now(),
            error_message=RESENDING,
        )
    # Its status callbacks came while we had no sid and were dropped: take Twilio's word.
    status = _PROVIDER_STATUS.get(found.status, Status.SENT)
    fields = {"provider_id": found.provider_id, "sent_at": found.sent_at or timezone.now()}
    if status != Status.SENT:
        fields["error_message"] = f"Reconciled: Twilio reports it {found.status}"
    return _settle(message, status=status, **fields)


def reconcile_stale_sending(
    *, older_than: dt.timedelta = dt.timedelta(minutes=10), limit: int = 500
) -> dict[str, int]:
    """Settle rows in "sending" untouched for `older_than`; counts by new status."""
    # A worker that died mid-send (or a 5xx on create) leaves its row "sending".
    stale = OutboundMessage.objects.filter(
        status=Status.SENDING, updated_at__lt=timezone.now() - older_than
    ).order_by("updated_at", "id")[:limit]
    return dict(Counter(reconcile_message(message) for message in stale))


def _settle(message: OutboundMessage, *, status: str, **fields) -> str:
    """Leave "sending" only if nobody moved the row since it was read.

    Matching `updated_at` too means a slow reconcile cannot act on a row another
    one already sent back to "planned" and a worker has claimed again.
    """
    moved = OutboundMessage.objects.filter(
        pk=message.pk, status=Status.SENDING, updated_at=message.updated_at
    ).update(status=status, updated_at=timezone.now(), **fields)
    return str(status) if moved else "skipped"
