"""The outbox: one row per message PracticeCRM intends to send (issue #4).

The row, not the broker, is the source of truth. Its idempotency key is UNIQUE in
the database, and every move between statuses is a conditional UPDATE, so a retry,
a crashed worker or two dispatchers never send one message twice.
"""

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from followups.models import Followup
from locations.models import Location
from patients.models import Appointment, AppointmentType, Patient


class Kind(models.TextChoices):
    APPOINTMENT_REMINDER = "appointment_reminder", "Appointment reminder"
    RECALL = "recall", "Recall outreach"
    CONFIRMATION_REPLY = "confirmation_reply", "Confirmation reply"
    HELP_REPLY = "help_reply", "HELP reply"
    OPT_OUT_CONFIRMATION = "opt_out_confirmation", "Opt-out confirmation"


class Channel(models.TextChoices):
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"


class StepChannel(models.TextChoices):
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"
    PREFERRED = "preferred", "Patient's preferred channel"


def validate_steps(value: object, *, offset_key: str) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError("Give at least one step.")
    for step in value:
        if (
            not isinstance(step, dict)
            or not isinstance(step.get(offset_key), int)
            or step.get("channel") not in StepChannel.values
        ):
            raise ValidationError(f"Each step needs “{offset_key}” and a channel.")


class ReminderSchedule(models.Model):
    """When appointment reminders go out, per location and (optionally) visit type.

    Steps are minutes before the visit and a channel, e.g. email 7 days, SMS 2 days,
    SMS 2 hours. A type's own schedule beats the location's, which beats the
    built-in default (reminders.planning.DEFAULT_APPOINTMENT_STEPS).
    """

    location = models.ForeignKey(Location, on_delete=models.CASCADE, related_name="+")
    appointment_type = models.ForeignKey(
        AppointmentType,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Leave empty for the location's default.",
    )
    steps = models.JSONField(help_text='[{"minutes_before": 10080, "channel": "email"}, …]')
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["location__name", "appointment_type__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["location", "appointment_type"],
                name="one_schedule_per_location_type",
            ),
            models.UniqueConstraint(
                fields=["location"],
                condition=Q(appointment_type__isnull=True),
                name="one_default_schedule_per_location",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.location} — {self.appointment_type or 'all visit types'}"

    def clean(self) -> None:
        validate_steps(self.steps, offset_key="minutes_before")


class OutreachPlan(models.Model):
    """A recall sequence relative to the due date, named by cadence rules.

    Steps are days from the due date (negative = before) and a channel, e.g.
    email at −14, SMS at 0, SMS at +14; after the last step the follow-up is on
    the call list (the Today worklist) until it lapses after the rule's attempts.
    """

    name = models.CharField(max_length=60, unique=True)
    steps = models.JSONField(help_text='[{"days": -14, "channel": "email"}, …]')
    is_active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        validate_steps(self.steps, offset_key="days")


class MessageTemplate(models.Model):
    """The words of one kind of message on one channel in one language.

    Rows without a location are the practice's defaults; a location's row
    overrides them. A missing language falls back to English. Only the
    placeholders in reminders.templating.PLACEHOLDERS can be used.
    """

    kind = models.CharField(max_length=24, choices=Kind.choices)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    language = models.CharField(
        max_length=8, choices=Patient.Language.choices, default=Patient.Language.EN
    )
    location = models.ForeignKey(
        Location,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="message_templates",
        help_text="Leave empty for the default used by every location.",
    )
    subject = models.CharField(max_length=150, blank=True, help_text="Email only.")
    body = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "channel", "language", "location__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "channel", "language", "location"],
                name="one_template_per_location",
            ),
            models.UniqueConstraint(
                fields=["kind", "channel", "language"],
                condition=Q(location__isnull=True),
                name="one_default_template",
            ),
        ]

    def __str__(self) -> str:
        where = self.location or "all locations"
        return (
            f"{self.get_kind_display()} · {self.get_channel_display()} · {self.language} · {where}"
        )


class OutboundMessage(models.Model):
    """A message planned, sent, suppressed or failed — with the reason when not sent."""

    Kind = Kind
    Channel = Channel

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
        MERGED = "merged", "Sent with the family's message"

    idempotency_key = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=24, choices=Kind.choices)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    # Who the message is about, and who receives it: the household's primary
    # contact receives the family's reminders when household grouping is on.
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="messages")
    recipient = models.ForeignKey(
        Patient, on_delete=models.CASCADE, null=True, blank=True, related_name="received_messages"
    )
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="messages")
    appointment = models.ForeignKey(
        Appointment, on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    followup = models.ForeignKey(
        Followup, on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    # Which step of the schedule or outreach plan planned it, e.g. "2880m:sms" or
    # "-14d:email": replanning moves the pending row of the same step.
    step = models.CharField(max_length=40, blank=True)
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
    # Failures a person should look at (carrier blocked, unreachable after retries),
    # until someone marks them handled on the Messages page.
    needs_attention = models.BooleanField(default=False)
    # Household grouping: the message this one went out inside (status "merged").
    merged_into = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="merged"
    )
    handled_at = models.DateTimeField(null=True, blank=True)
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
            models.Index(fields=["location", "-scheduled_for"], name="outbox_location_idx"),
            # The Messages page's "Today's queue": what is still to go out, by location.
            models.Index(
                fields=["location", "scheduled_for"],
                condition=Q(status__in=["planned", "queued", "sending"]),
                name="outbox_pending_idx",
            ),
            # Its "Needs attention": unhandled failures and flagged rows.
            models.Index(
                fields=["location", "scheduled_for"],
                condition=Q(handled_at__isnull=True)
                & (Q(needs_attention=True) | Q(status__in=["failed", "undelivered"])),
                name="outbox_attention_idx",
            ),
            models.Index(fields=["recipient", "sent_at"], name="outbox_recipient_sent_idx"),
            models.Index(
                fields=["appointment"],
                condition=Q(status__in=["planned", "suppressed"]),
                name="outbox_pending_appt_idx",
            ),
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


class MessageTallyBase(models.Model):
    """How many outbox rows share a location, local day, kind, status and reason."""

    # Indexed by the key's index, which leads with it.
    location = models.ForeignKey(
        Location, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    day = models.DateField()
    kind = models.CharField(max_length=24, choices=Kind.choices)
    status = models.CharField(max_length=12, choices=OutboundMessage.Status.choices)
    # Only for status "suppressed" (reminders.tallies); blank otherwise.
    reason = models.CharField(max_length=200, blank=True)
    n = models.IntegerField()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.day} · {self.kind} · {self.status} · {self.n:+d}"


class MessageTally(MessageTallyBase):
    """The outbox's counts, one row per key; PostgreSQL keeps them (reminders.tallies)."""

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["location", "day", "kind", "status", "reason"],
                name="messagetally_key",
            )
        ]
        indexes = [
            # compact()'s clean-up of keys that came to zero.
            models.Index(fields=["id"], condition=Q(n=0), name="messagetally_zero_idx"),
            # Each status's total, without the reasons of the messages not sent
            # (reminders.tallies.TOTALS): the dashboard's numbers, index-only.
            models.Index(
                fields=["location", "day"],
                include=["kind", "status", "n"],
                condition=Q(reason=""),
                name="messagetally_total_idx",
            ),
            # The messages not sent, by reason (and their total): "Not sent, by
            # reason" (reminders.tallies.SUPPRESSED), index-only.
            models.Index(
                fields=["location", "day"],
                include=["kind", "reason", "n"],
                condition=Q(status="suppressed"),
                name="messagetally_suppressed_idx",
            ),
        ]


class MessageTallyChange(MessageTallyBase):
    """What statements on the outbox added (n > 0) or took (n < 0), until compacted."""

    class Meta:
        indexes = [models.Index(fields=["location", "day"], name="messagetallychange_idx")]
