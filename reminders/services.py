"""Claiming and sending outbox rows, exactly once per idempotency key.

planned ──dispatcher (SKIP LOCKED)──▶ queued ──send task (conditional UPDATE)──▶ sending
  ▲                                                                                  │
  └──── retryable error, backoff ◀────────────────────────────────────────────────────┤
                                         sent / failed / shadow ◀─────────────────────┘

Each arrow is one UPDATE that names the status it expects, so of two workers (or
one task delivered twice) exactly one moves the row and only that one sends.
A row left in "sending" by a worker killed mid-send is never resent blindly: the
provider may have accepted it (see `sending_stale`).
"""

import datetime as dt
import random
from functools import partial

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from locations.models import Location
from patients.models import Appointment, Patient
from patients.services import appointment_save, patient_save
from reminders.models import InboundMessage, OutboundMessage
from reminders.senders import SendError, send_email, sms_sender

Status = OutboundMessage.Status
MAX_ATTEMPTS = 5


def backoff(attempts: int) -> dt.timedelta:
    """Exponential backoff with full jitter: up to 1, 2, 4, 8… minutes, capped at an hour."""
    ceiling = min(60 * 2 ** max(attempts - 1, 0), 3600)
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def dispatch_due(*, now: dt.datetime | None = None, limit: int = 500) -> list[int]:
    """Claim up to `limit` due rows (planned → queued) and enqueue a send for each.

    `SKIP LOCKED` lets two dispatchers run at once: each claims rows the other has
    not locked. Sends are queued only after the claim commits, so a worker never
    looks for a row that is not yet "queued".
    """
    from reminders.tasks import send_message

    now = now or timezone.now()
    with transaction.atomic():
        ids = list(
            OutboundMessage.objects.select_for_update(skip_locked=True)
            .filter(status=Status.PLANNED, scheduled_for__lte=now)
            .order_by("scheduled_for", "id")
            .values_list("pk", flat=True)[:limit]
        )
        OutboundMessage.objects.filter(pk__in=ids, status=Status.PLANNED).update(
            status=Status.QUEUED, updated_at=now
        )
        for pk in ids:
            transaction.on_commit(partial(send_message.delay, pk))
    return ids


def message_send(*, message_id: int) -> str:
    """Send one queued row; returns its new status (or "skipped" if not ours to send)."""
    claimed = OutboundMessage.objects.filter(pk=message_id, status=Status.QUEUED).update(
        status=Status.SENDING, attempts=F("attempts") + 1, updated_at=timezone.now()
    )
    if not claimed:
        # Another delivery of this task, or a row cancelled meanwhile: nothing to do.
        return "skipped"
    message = OutboundMessage.objects.select_related("location").get(pk=message_id)
    if message.location.shadow_mode:
        return _finish(message, status=Status.SHADOW, sent_at=timezone.now())
    try:
        if message.channel == OutboundMessage.Channel.SMS:
            result = sms_sender().send(to=message.to, body=message.body, sender=message.sender)
        else:
            result = send_email(
                to=message.to,
                subject=message.subject,
                text=message.body,
                html=message.html_body,
                from_email=message.sender,
                # Unsubscribe links arrive with templates and planning (#4).
            )
    except SendError as exc:
        if exc.retryable and message.attempts < MAX_ATTEMPTS:
            return _finish(
                message,
                status=Status.PLANNED,
                scheduled_for=timezone.now() + backoff(message.attempts),
                error_code=exc.code,
                error_message=str(exc)[:300],
            )
        return _finish(
            message, status=Status.FAILED, error_code=exc.code, error_message=str(exc)[:300]
        )
    return _finish(
        message, status=Status.SENT, provider_id=result.provider_id, sent_at=timezone.now()
    )


def _finish(message: OutboundMessage, *, status: str, **fields) -> str:
    """Leave "sending" — only from "sending", so a late duplicate cannot overwrite."""
    OutboundMessage.objects.filter(pk=message.pk, status=Status.SENDING).update(
        status=status, updated_at=timezone.now(), **fields
    )
    return status


def sending_stale(*, older_than: dt.timedelta = dt.timedelta(minutes=10)):
    """Rows a worker began to send and never finished: to reconcile with the provider."""
    return OutboundMessage.objects.filter(
        status=Status.SENDING, updated_at__lt=timezone.now() - older_than
    )


# Twilio's message statuses in the order they can happen; the outbox never moves back.
_PROVIDER_STATUS = {
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "undelivered": Status.UNDELIVERED,
    "failed": Status.FAILED,
}
_EARLIER = {
    Status.SENT: [Status.SENDING],
    Status.DELIVERED: [Status.SENDING, Status.SENT],
    Status.UNDELIVERED: [Status.SENDING, Status.SENT],
    Status.FAILED: [Status.SENDING, Status.SENT],
}


def message_status_update(*, provider_id: str, provider_status: str, error_code: str = "") -> bool:
    """Apply a provider status callback; returns whether the row moved.

    Callbacks arrive out of order and more than once: the UPDATE only matches rows
    in an earlier status, so "delivered" followed by a late "sent" stays delivered,
    and a repeated callback changes nothing.
    """
    new = _PROVIDER_STATUS.get(provider_status)
    if not provider_id or new is None:
        return False  # queued/accepted/sending add nothing to what the send recorded
    fields = {"status": new, "updated_at": timezone.now()}
    if error_code:
        fields["error_code"] = error_code[:20]
    return bool(
        OutboundMessage.objects.filter(provider_id=provider_id, status__in=_EARLIER[new]).update(
            **fields
        )
    )


# Carrier-standard keywords (case and surrounding spaces ignored).
OPT_OUT_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
OPT_IN_WORDS = {"START", "YES", "UNSTOP"}
HELP_WORDS = {"HELP", "INFO"}
CONFIRM_WORDS = {"C", "Y", "CONFIRM"}


@transaction.atomic
def inbound_receive(*, provider_id: str, from_number: str, to_number: str, body: str):
    """Act on a patient's SMS once, whatever number of times Twilio delivers it.

    A number shared by several patients (a household) acts for all of them on
    STOP/START; a confirmation needs exactly one matching next visit, otherwise it
    goes to the inbox — a guess could confirm the wrong child's appointment.
    """
    existing = InboundMessage.objects.filter(provider_id=provider_id).first()
    if existing is not None:
        return existing
    word = body.strip().upper()
    patients = list(Patient.objects.filter(mobile_phone=from_number))
    location = Location.objects.filter(sms_from_number=to_number).first()
    inbound = InboundMessage(
        provider_id=provider_id,
        from_number=from_number,
        to_number=to_number,
        body=body[:1600],
        location=location,
        received_at=timezone.now(),
        action=InboundMessage.Action.INBOX,
    )
    if word in OPT_OUT_WORDS or word in OPT_IN_WORDS:
        opted_out = timezone.now() if word in OPT_OUT_WORDS else None
        for patient in patients:
            if (patient.sms_opted_out_at is None) != (opted_out is None):
                patient.sms_opted_out_at = opted_out
                patient_save(patient=patient, by=None)
        inbound.action = (
            InboundMessage.Action.OPT_OUT if opted_out else InboundMessage.Action.OPT_IN
        )
    elif word in HELP_WORDS:
        inbound.action = InboundMessage.Action.HELP
    elif word in CONFIRM_WORDS:
        upcoming = Appointment.objects.filter(
            patient__in=patients,
            status=Appointment.Status.SCHEDULED,
            start__gt=timezone.now(),
            **({"location": location} if location else {}),
        ).order_by("start")
        # Each patient's next visit; more than one patient with one is ambiguous.
        nexts: dict[int, Appointment] = {}
        for appointment in upcoming:
            nexts.setdefault(appointment.patient_id, appointment)
        if len(nexts) == 1:
            (appointment,) = nexts.values()
            appointment.status = Appointment.Status.CONFIRMED
            appointment_save(appointment=appointment, by=None)
            inbound.action = InboundMessage.Action.CONFIRMED
            inbound.confirmed_appointment = appointment
        else:
            inbound.note = (
                "No upcoming appointment to confirm."
                if not nexts
                else "Several patients share this number; confirm the right visit by hand."
            )
    if not patients:
        inbound.note = inbound.note or "No patient has this mobile number."
    inbound.save()
    inbound.patients.set(patients)
    return inbound
