"""What the recall dashboard keeps so that it need not count from scratch (issue #7)."""

from django.db import models


class RecallContact(models.Model):
    """One contact about a follow-up, with what the dashboard groups it by.

    A row per staff contact attempt and per recall message that went out (sent,
    delivered or undelivered), carrying its follow-up's location, type, due date
    and — while the follow-up is scheduled or done — the time and day its booking
    was recorded. PostgreSQL keeps these rows (triggers, reports.contacts): never
    write them from Python. Columns are plain ids, not foreign keys: the rows
    follow their sources' deletes through the triggers.
    """

    attempt_id = models.BigIntegerField(null=True)  # followups.ContactAttempt
    message_id = models.BigIntegerField(null=True)  # reminders.OutboundMessage
    followup_id = models.BigIntegerField()
    # The location whose calendar gives `day` and whose users see the contact: the
    # attempt's (its follow-up's), or the message's own.
    location_id = models.IntegerField()
    followup_location_id = models.IntegerField()
    followup_type_id = models.IntegerField()
    due_date = models.DateField()
    at = models.DateTimeField()
    day = models.DateField()
    staff_id = models.IntegerField(null=True)
    # The scheduled visit's `created_at` while the follow-up is scheduled or done,
    # and its day on the follow-up's location's calendar; else null.
    booked_at = models.DateTimeField(null=True)
    booked_day = models.DateField(null=True)
    # The follow-up's contacts in order of time (then attempt before message, then
    # id): the previous one's day, and the next one's time and day. `solo`: all of
    # the follow-up's contacts are at its own location, on one calendar, so the
    # dashboard counts its follow-ups from these without grouping (reports.onepass).
    prev_day = models.DateField(null=True)
    next_at = models.DateTimeField(null=True)
    next_day = models.DateField(null=True)
    solo = models.BooleanField(db_default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["attempt_id"],
                condition=models.Q(attempt_id__isnull=False),
                name="recallcontact_attempt_key",
            ),
            models.UniqueConstraint(
                fields=["message_id"],
                condition=models.Q(message_id__isnull=False),
                name="recallcontact_message_key",
            ),
            models.CheckConstraint(
                condition=models.Q(attempt_id__isnull=False, message_id__isnull=True)
                | models.Q(attempt_id__isnull=True, message_id__isnull=False),
                name="recallcontact_one_source",
            ),
        ]
        indexes = [
            # The dashboard's one read: its locations' days, every column it uses.
            models.Index(
                fields=["location_id", "day"],
                include=[
                    "followup_id",
                    "followup_location_id",
                    "followup_type_id",
                    "due_date",
                    "at",
                    "staff_id",
                    "attempt_id",
                    "booked_at",
                    "booked_day",
                    "prev_day",
                    "next_at",
                    "next_day",
                    "solo",
                ],
                name="recallcontact_read_idx",
            ),
            # The few contacts of follow-ups contacted away from their location,
            # which the dashboard still groups per follow-up (reports.onepass).
            models.Index(
                fields=["location_id", "day"],
                include=[
                    "followup_id",
                    "followup_location_id",
                    "followup_type_id",
                    "due_date",
                    "at",
                    "booked_at",
                    "booked_day",
                ],
                condition=models.Q(solo=False),
                name="recallcontact_away_idx",
            ),
            # A follow-up's last contact at or before its booking, by the booking's
            # day: the chart's bookings from recall per week, and the period's
            # bookings of solo follow-ups per type (reports.onepass).
            models.Index(
                fields=["location_id", "booked_day"],
                include=["at", "booked_at", "solo", "followup_type_id", "due_date"],
                condition=models.Q(at__lte=models.F("booked_at"))
                & (models.Q(next_at__isnull=True) | models.Q(next_at__gt=models.F("booked_at"))),
                name="recallcontact_booked_idx",
            ),
            # Staff attempts only (a quarter of the contacts): the chart's attempts
            # per week and the staff table.
            models.Index(
                fields=["location_id", "day"],
                include=["followup_id", "staff_id", "at", "booked_at"],
                condition=models.Q(attempt_id__isnull=False),
                name="recallcontact_attempt_idx",
            ),
            models.Index(fields=["followup_id"], name="recallcontact_followup_idx"),
        ]

    def __str__(self) -> str:
        source = f"attempt {self.attempt_id}" if self.attempt_id else f"message {self.message_id}"
        return f"{source} about follow-up {self.followup_id} on {self.day}"


class VisitFlags(models.Model):
    """One visit with what the dashboard's reminder table counts it by.

    A row per visit: its location, local day (on its location's calendar), start
    and status, and whether an appointment reminder about it went out (sent,
    delivered or undelivered) and whether the patient confirmed it by SMS.
    PostgreSQL keeps these rows (triggers, reports.visits): never write them from
    Python. Plain ids, not foreign keys: the rows follow their sources' deletes
    through the triggers.
    """

    appointment_id = models.BigIntegerField(primary_key=True)  # patients.Appointment
    location_id = models.IntegerField()
    day = models.DateField()
    start = models.DateTimeField()
    status = models.CharField(max_length=16)
    reminded = models.BooleanField()
    confirmed = models.BooleanField()

    class Meta:
        indexes = [
            # The dashboard's one read: its locations' days, every column it counts.
            models.Index(
                fields=["location_id", "day"],
                include=["start", "status", "reminded", "confirmed"],
                name="visitflags_read_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"visit {self.appointment_id} on {self.day}"
