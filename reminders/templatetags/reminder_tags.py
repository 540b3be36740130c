"""How outbox rows, recall outreach and narrowed consent read on staff pages."""

import datetime as dt

from django import template

from reminders import selectors
from reminders.models import OutboundMessage

register = template.Library()

Status = OutboundMessage.Status
_BADGES: dict[str, str] = {
    Status.SENT: "badge-ok",
    Status.DELIVERED: "badge-ok",
    Status.FAILED: "badge-danger",
    Status.UNDELIVERED: "badge-danger",
    Status.SUPPRESSED: "badge-muted",
    Status.CANCELLED: "badge-cancelled",
    Status.SHADOW: "badge-muted",
    Status.MERGED: "badge-ok",
}


@register.filter
def outbox_note(message: OutboundMessage) -> str:
    return selectors.status_note(message)


@register.filter
def outbox_when(message: OutboundMessage) -> dt.datetime:
    return selectors.message_when(message)


@register.filter
def status_badge(status: str) -> str:
    # Planned, queued and sending are "on their way": the scheduled look.
    return _BADGES.get(status, "badge-scheduled")


@register.filter
def outreach(followup) -> selectors.Outreach | None:
    """The recall outreach of a Today row, from the page's one prefetch query."""
    return selectors.outreach_of(getattr(followup, "recall_messages", []))


@register.filter
def consent_scope(consent) -> str:
    """What a granted consent covers when it is narrowed per kind of message."""
    if consent is None or consent.status != "granted":
        return ""
    reminders, recall = consent.appointment_reminders, consent.recall_outreach
    if reminders and recall:
        return ""
    if reminders:
        return "appointment reminders only, not recall outreach"
    if recall:
        return "recall outreach only, not appointment reminders"
    return "neither appointment reminders nor recall outreach"
