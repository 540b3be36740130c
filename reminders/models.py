"""The outbox: one row per message PracticeCRM intends to send (issue #4).

The row, not the broker, is the source of truth. Its idempotency key is UNIQUE in
the database, and every move between statuses is a conditional UPDATE, so a retry,
a crashed worker or two dispatchers never send one message twice.
"""

from django.db import models
from django.db.models import Q

from followups.models import Followup
from locations.models import Location
from patients.models import Appointment, Patient


class OutboundMessage(models.Model):
    """A message planned, sent, suppressed or failed — with the reason when not sent."""

    class Kind(models.TextChoices):
        APPOINTMENT_REMINDER = "appointment_reminder", "Appointment reminder"
        RECALL = "recall", "Recall outreach"
        CONFIRMATION_REPLY = "confirmation_reply", "Confirmation reply"
        HELP_REPLY = "help_reply", "HELP reply"
        OPT_OUT_CONFIRMATION = "opt_out_confirmation", "Opt-out confirmation"

    class Channel(models.TextChoices):
        SMS = "sms", "SMS"
        EMAIL = "email", "Email"

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned"
        SUPPRESSED = "suppressed", "Not sent"
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        UNDELIVERED = "undelivered", "Undelivered"
        FAILED = "failed", "Failed"
        SHADOW = "shadow", "Recorded (shadow mode)"
        CANCELLED = "cancelled", "Cancelled"

    idempotency_key = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=24, choices=Kind.choices)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="messages")
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="messages")
    appointment = models.ForeignKey(
        Appointment, on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    followup = models.ForeignKey(
        Followup, on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    # Snapshots: what was (to be) sent, to whom and from where, as of planning.
    to = models.CharField(max_length=254)
    sender = models.CharField(max_length=254, help_text="SMS number, MG… service or from-address.")
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField()
    html_body = models.TextField(blank=True)
    scheduled_for = models.DateTimeField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PLANNED)
    reason = models.CharField(
        max_length=200, blank=True, help_text="Why it was not sent, in plain words."
    )
    provider_id = models.CharField(max_length=200, blank=True, db_index=True)
    error_code = models.CharField(max_length=20, blank=True)
    error_message = models.CharField(max_length=300, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-scheduled_for", "-id"]
        indexes = [
            # The dispatcher's question every minute: what is due and not yet claimed?
            models.Index(
                fields=["scheduled_for"],
                condition=Q(status="planned"),
                name="outbox_due_idx",
            ),
            models.Index(fields=["patient", "-scheduled_for"], name="outbox_patient_idx"),
        ]

    def __str__(self) -> str:
        kind, channel = self.get_kind_display(), self.get_channel_display()
        return f"{kind} by {channel} ({self.get_status_display()})"

    def get_additional_data(self) -> dict:
        return {"patient_id": self.patient_id}


class InboundMessage(models.Model):
    """An SMS a patient sent to one of the practice's numbers, and what it did.

    Keywords act on their own (STOP opts the number out, START back in, C confirms
    the next visit); everything else — and anything ambiguous — waits in the staff
    inbox on the patients' timelines.
    """

    class Action(models.TextChoices):
        OPT_OUT = "opt_out", "Opted out (STOP)"
        OPT_IN = "opt_in", "Opted back in (START)"
        HELP = "help", "Asked for help"
        CONFIRMED = "confirmed", "Confirmed the next appointment"
        INBOX = "inbox", "Waiting for staff"

    provider_id = models.CharField(max_length=64, unique=True)
    from_number = models.CharField(max_length=20, db_index=True)
    to_number = models.CharField(max_length=20)
    body = models.TextField(blank=True)
    location = models.ForeignKey(
        Location, on_delete=models.SET_NULL, null=True, blank=True, related_name="inbound_messages"
    )
    patients = models.ManyToManyField(Patient, blank=True, related_name="inbound_messages")
    action = models.CharField(max_length=12, choices=Action.choices)
    note = models.CharField(max_length=200, blank=True, help_text="Why it went to the inbox.")
    confirmed_appointment = models.ForeignKey(
        Appointment, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    received_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"SMS from {self.from_number}: {self.get_action_display()}"
