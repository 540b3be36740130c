"""Follow-up cadences (recall rules), follow-ups, contact attempts and discharges.

A cadence rule turns an event (an appointment of a trigger type completed, or a
patient discharged) into a follow-up of one type, due after an interval. A
follow-up is closed by booking and completing an appointment of a satisfying type.
"""

import datetime as dt

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import models
from django.db.models import Q

from locations.models import Location
from patients.models import Appointment, AppointmentType, Patient


class FollowupType(models.Model):
    """What a follow-up is for: "Hygiene recall", "PT re-evaluation"…

    `value` orders the worklist among follow-ups equally overdue: a lapsed
    six-month hygiene recall matters more to a dental practice than a courtesy call.
    """

    name = models.CharField(max_length=100, unique=True)
    code = models.SlugField(max_length=40, unique=True)
    value = models.PositiveSmallIntegerField(
        default=50, help_text="Priority among equally overdue follow-ups: higher comes first."
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class CadenceRule(models.Model):
    """After an event, a patient is due for a follow-up of one type after an interval."""

    class Event(models.TextChoices):
        COMPLETED = "completed", "Appointment completed"
        DISCHARGED = "discharged", "Patient discharged"

    class Unit(models.TextChoices):
        DAYS = "days", "days"
        WEEKS = "weeks", "weeks"
        MONTHS = "months", "months"
        YEARS = "years", "years"

    name = models.CharField(max_length=120, unique=True)
    event = models.CharField(max_length=16, choices=Event.choices, default=Event.COMPLETED)
    trigger_types = models.ManyToManyField(
        AppointmentType,
        blank=True,
        related_name="triggering_rules",
        help_text="Completing one of these starts the interval (appointment-completed rules).",
    )
    interval_value = models.PositiveSmallIntegerField("interval", default=6)
    interval_unit = models.CharField(max_length=8, choices=Unit.choices, default=Unit.MONTHS)
    followup_type = models.ForeignKey(FollowupType, on_delete=models.PROTECT, related_name="rules")
    satisfying_types = models.ManyToManyField(
        AppointmentType,
        related_name="satisfying_rules",
        help_text="Booking one of these schedules the follow-up; completing it closes it.",
    )
    all_locations = models.BooleanField(default=True)
    locations = models.ManyToManyField(
        Location, blank=True, related_name="cadence_rules", help_text="When not all locations."
    )
    outreach_plan = models.CharField(
        max_length=60, blank=True, help_text="Name of the recall outreach plan (reminders)."
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=3, help_text="Lapsed after this many contact attempts without a booking."
    )
    lapse_after_days = models.PositiveSmallIntegerField("lapsed after (days past due)", default=180)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def interval(self) -> relativedelta:
        n = self.interval_value
        return {
            self.Unit.DAYS: relativedelta(days=n),
            self.Unit.WEEKS: relativedelta(weeks=n),
            self.Unit.MONTHS: relativedelta(months=n),
            self.Unit.YEARS: relativedelta(years=n),
        }[self.Unit(self.interval_unit)]

    @property
    def interval_display(self) -> str:
        unit = self.get_interval_unit_display()
        return f"{self.interval_value} {unit[:-1] if self.interval_value == 1 else unit}"

    def due_after(self, day: dt.date) -> dt.date:
        # relativedelta clamps to the month's end: Aug 31 + 6 months is Feb 28/29.
        return day + self.interval

    def applies_at(self, location: Location) -> bool:
        return self.all_locations or self.locations.filter(pk=location.pk).exists()


class Discharge(models.Model):
    """The end of an episode of care at a location (e.g. a PT plan of care).

    The "patient discharged" event of cadence rules; no clinical content.
    """

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="discharges")
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="+")
    discharged_on = models.DateField()
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-discharged_on"]

    def __str__(self) -> str:
        return f"Discharged from {self.location} on {self.discharged_on:%Y-%m-%d}"

    def get_additional_data(self) -> dict:
        return {"patient_id": self.patient_id}


ACTIVE_STATUSES = ("open", "contacted", "scheduled")


class Followup(models.Model):
    """A patient due for a follow-up or recall, from a rule or added by hand.

    At most one active (open, contacted or scheduled) follow-up per patient and
    type — a database constraint, so two workers completing two visits at once
    cannot create a duplicate.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CONTACTED = "contacted", "Contacted"
        SCHEDULED = "scheduled", "Scheduled"
        DONE = "done", "Done"
        DISMISSED = "dismissed", "Dismissed"
        LAPSED = "lapsed", "Lapsed"

    class Source(models.TextChoices):
        RULE = "rule", "Cadence rule"
        MANUAL = "manual", "Added by staff"
        IMPORT = "import", "Imported"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="followups")
    followup_type = models.ForeignKey(FollowupType, on_delete=models.PROTECT, related_name="+")
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="followups")
    rule = models.ForeignKey(
        CadenceRule, on_delete=models.SET_NULL, null=True, blank=True, related_name="followups"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    due_date = models.DateField()
    # due_date + the rule's "lapsed after" days, stored so the worklist can bucket
    # and index it without per-row date arithmetic in SQL.
    lapses_on = models.DateField()
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.RULE)
    source_appointment = models.ForeignKey(
        Appointment, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    scheduled_appointment = models.ForeignKey(
        Appointment, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(max_length=200, blank=True, help_text="Why it was added by hand.")
    snoozed_until = models.DateField(null=True, blank=True)
    dismissed_reason = models.CharField(max_length=200, blank=True)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="assigned_followups",
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["due_date", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "followup_type"],
                condition=Q(status__in=ACTIVE_STATUSES),
                name="one_active_followup_per_type",
            )
        ]
        indexes = [
            # Also the dashboard's "past due, still open" (reports.onepass): the
            # range due before today, with what it filters and groups by.
            models.Index(
                fields=["location", "due_date"],
                include=["lapses_on", "followup_type"],
                condition=Q(status__in=["open", "contacted"]),
                name="followup_worklist_idx",
            ),
            # The same rows in the list's order across locations (a manager's Today).
            models.Index(
                fields=["due_date"],
                condition=Q(status__in=["open", "contacted"]),
                name="followup_worklist_due_idx",
            ),
            models.Index(fields=["patient", "status"], name="followup_patient_idx"),
            # Today's bucket counts: every follow-up still on a worklist, lapsed included.
            models.Index(
                fields=["location", "due_date"],
                condition=Q(status__in=["open", "contacted", "lapsed"]),
                name="followup_active_idx",
            ),
            # Today's "Lapsed" tab: marked lapsed, or past "lapsed after" while open.
            models.Index(
                fields=["location", "due_date"],
                condition=Q(status="lapsed"),
                name="followup_lapsed_idx",
            ),
            # Open follow-ups by the day they lapse: Today's "Lapsed" tab and the
            # nightly job that marks them (followups.selectors, followups.services).
            models.Index(
                fields=["location", "lapses_on"],
                include=["due_date", "followup_type"],
                condition=Q(status__in=["open", "contacted"]),
                name="followup_lapsing_idx",
            ),
            # Follow-ups marked lapsed, by the day they lapsed: with
            # followup_lapsing_idx, the dashboard's "lapsed" count of the period
            # (reports.onepass), which read every status's entries of
            # followup_lapse_idx and kept one in ten. Marked lapsed only: an index
            # that also held open follow-ups drew Today's Overdue count into a
            # slower plan.
            models.Index(
                fields=["location", "lapses_on"],
                include=["followup_type"],
                condition=Q(status="lapsed"),
                name="followup_lapsed_on_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.followup_type} due {self.due_date:%Y-%m-%d}"

    def get_additional_data(self) -> dict:
        return {"patient_id": self.patient_id}

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class ContactAttempt(models.Model):
    """One try at reaching the patient about a follow-up, and how it went."""

    class Channel(models.TextChoices):
        CALL = "call", "Phone call"
        VOICEMAIL = "voicemail", "Voicemail"
        SMS = "sms", "SMS"
        EMAIL = "email", "Email"
        LETTER = "letter", "Letter"
        IN_PERSON = "in_person", "In person"

    class Outcome(models.TextChoices):
        BOOKED = "booked", "Reached & booked"
        DECLINED = "declined", "Reached & declined"
        NO_ANSWER = "no_answer", "No answer"
        LEFT_MESSAGE = "left_message", "Left message"
        WRONG_NUMBER = "wrong_number", "Wrong number"
        DO_NOT_CONTACT = "do_not_contact", "Asked not to be contacted"

    followup = models.ForeignKey(Followup, on_delete=models.CASCADE, related_name="attempts")
    # The follow-up's location (which never changes), kept on the attempt so reports
    # range over one location's attempts by index (reports.onepass) instead of
    # reading every attempt of the practice in the period. save() fills it in.
    location = models.ForeignKey(
        Location, on_delete=models.PROTECT, related_name="+", editable=False
    )
    channel = models.CharField(max_length=12, choices=Channel.choices)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    note = models.CharField(max_length=300, blank=True)
    # The number dialled or texted, so "wrong number" removes the right one.
    phone = models.CharField(max_length=20, blank=True)
    staff = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    attempted_at = models.DateTimeField()

    class Meta:
        ordering = ["-attempted_at", "-id"]
        indexes = [
            models.Index(fields=["followup", "-attempted_at"], name="attempt_latest_idx"),
            # A location's attempts in a time window, with what the dashboard reads.
            models.Index(
                fields=["location", "attempted_at", "followup", "staff"],
                name="attempt_location_time_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()}: {self.get_outcome_display()}"

    def save(self, *args, **kwargs) -> None:
        if self.location_id is None and self.followup_id is not None:
            self.location_id = self.followup.location_id
        super().save(*args, **kwargs)

    def get_additional_data(self) -> dict:
        return {"patient_id": self.followup.patient_id}
