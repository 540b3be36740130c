"""Patients, their households, consents, external ids and appointment history.

History only: PracticeCRM holds no clinical content — no notes, diagnoses or
treatments. See README "Data we hold".
"""

import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Upper
from django.urls import reverse

from locations.models import Location
from patients.phones import phone_search_digits
from patients.search import fold


class Channel(models.TextChoices):
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"
    CALL = "call", "Phone call"


class Household(models.Model):
    """People who share reminders: the primary contact receives them for everyone.

    A parent booking for two children gets one message a day, not three.
    """

    name = models.CharField(max_length=120)
    primary_contact = models.ForeignKey(
        "Patient",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Receives reminders on behalf of the household's members.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def get_additional_data(self) -> dict:
        return {"household_id": self.pk}


class Patient(models.Model):
    """A person the practice keeps in touch with.

    Contact data and communication preferences live here; per-channel consent is in
    ChannelConsent. `search_name` and `search_phones` are folded copies kept for the
    indexed search box and rewritten on every save.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        INACTIVE = "inactive", "Inactive"
        MOVED = "moved", "Moved away"
        DECEASED = "deceased", "Deceased"

    class PreferredChannel(models.TextChoices):
        SMS = "sms", "SMS"
        EMAIL = "email", "Email"
        CALL = "call", "Phone call"
        NONE = "none", "No contact"

    class Language(models.TextChoices):
        EN = "en", "English"
        ES = "es", "Spanish"
        FR = "fr", "French"
        PT = "pt", "Portuguese"
        VI = "vi", "Vietnamese"
        ZH = "zh", "Chinese"

    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    preferred_name = models.CharField(max_length=100, blank=True)
    date_of_birth = models.DateField()
    mobile_phone = models.CharField(max_length=20, blank=True)
    home_phone = models.CharField(max_length=20, blank=True)
    email = models.EmailField(blank=True)
    address_line1 = models.CharField("address", max_length=200, blank=True)
    address_line2 = models.CharField("address line 2", max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    region = models.CharField("state / region", max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    language = models.CharField(max_length=8, choices=Language.choices, default=Language.EN)

    home_location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="patients")
    shared_with = models.ManyToManyField(
        Location,
        blank=True,
        related_name="shared_patients",
        help_text="Other locations whose staff may also see this patient.",
    )
    household = models.ForeignKey(
        Household, on_delete=models.SET_NULL, null=True, blank=True, related_name="members"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # Set when this record was a duplicate merged into another (patients.merge): it
    # keeps its own fields as history but leaves every list, search and worklist.
    # Indexed only where set (Meta): a full index on a column that is empty for
    # nearly every row invites the planner to read it for "IS NULL".
    merged_into = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        editable=False,
        related_name="merged_records",
        db_index=False,
    )

    preferred_channel = models.CharField(
        max_length=8, choices=PreferredChannel.choices, default=PreferredChannel.SMS
    )
    do_not_contact = models.BooleanField(default=False)
    do_not_contact_reason = models.CharField(max_length=200, blank=True)
    # Set from carrier STOP replies (reminders app) and cleared by START.
    sms_opted_out_at = models.DateTimeField(null=True, blank=True)
    # Set when Twilio says the mobile number cannot take SMS (landline, invalid):
    # reminders fall back to email until the number is changed.
    sms_unusable_reason = models.CharField(max_length=200, blank=True)

    search_name = models.CharField(max_length=320, editable=False, default="")
    search_phones = models.CharField(max_length=80, editable=False, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["last_name", "first_name", "id"]
        # The trigram (GIN) indexes behind name and phone search are PostgreSQL-only
        # and created in migration 0002, so the embedded SQLite run still migrates.
        indexes = [
            models.Index(fields=["date_of_birth"], name="patient_dob_idx"),
            # The patient list's order, for users of many locations (the list reads
            # it in order and stops after a page instead of sorting everyone).
            models.Index(fields=["last_name", "first_name", "id"], name="patient_name_idx"),
            models.Index(
                fields=["home_location", "last_name", "first_name", "id"],
                name="patient_location_name_idx",
            ),
            models.Index(Upper("email"), name="patient_email_upper_idx"),
            models.Index(
                fields=["merged_into"],
                condition=Q(merged_into__isnull=False),
                name="patient_merged_into_idx",
            ),
        ]

    def __str__(self) -> str:
        return self.display_name

    def save(self, *args, **kwargs):
        self.refresh_search_fields()
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "search_name", "search_phones"}
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("patients:detail", args=[self.pk])

    def refresh_search_fields(self) -> None:
        """Recompute the folded copies the search box reads.

        save() calls this; bulk writers (imports, seed_demo) call it themselves
        because bulk_create never runs save().
        """
        self.search_name = fold(f"{self.first_name} {self.preferred_name} {self.last_name}")
        self.search_phones = " ".join(
            filter(None, (phone_search_digits(p) for p in (self.mobile_phone, self.home_phone)))
        )

    def get_additional_data(self) -> dict:
        # Lets the patient timeline find every audit entry about this person.
        return {"patient_id": self.pk}

    @property
    def display_name(self) -> str:
        if self.preferred_name and self.preferred_name != self.first_name:
            return f"{self.first_name} “{self.preferred_name}” {self.last_name}"
        return f"{self.first_name} {self.last_name}"

    @property
    def age(self) -> int:
        today = dt.date.today()  # noqa: DTZ011 (age in whole years; a day off at midnight is fine)
        born = self.date_of_birth
        return today.year - born.year - ((today.month, today.day) < (born.month, born.day))

    @property
    def contact_blockers(self) -> list[str]:
        """Reasons nobody may reach out to this patient at all, for the page banner."""
        reasons = []
        if self.status == self.Status.DECEASED:
            reasons.append("Deceased")
        elif self.status != self.Status.ACTIVE:
            reasons.append(self.get_status_display())
        if self.do_not_contact:
            reasons.append(
                "Do not contact"
                + (f": {self.do_not_contact_reason}" if self.do_not_contact_reason else "")
            )
        if self.preferred_channel == self.PreferredChannel.NONE:
            reasons.append("Prefers no contact")
        return reasons


class ChannelConsent(models.Model):
    """The current consent of one patient for one channel, with who recorded it.

    One row per patient × channel; every change to it is in the audit trail, which
    is what the patient's timeline shows as consent history.
    """

    class Status(models.TextChoices):
        GRANTED = "granted", "Consented"
        REFUSED = "refused", "Refused"

    class Method(models.TextChoices):
        VERBAL = "verbal", "Verbal, in person or by phone"
        WRITTEN = "written", "Signed form"
        ONLINE = "online", "Online form"
        SMS_KEYWORD = "sms_keyword", "SMS keyword (STOP/START)"
        IMPORT = "import", "Imported from another system"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="consents")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    status = models.CharField(max_length=8, choices=Status.choices)
    method = models.CharField(max_length=16, choices=Method.choices)
    recorded_at = models.DateTimeField()
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    note = models.CharField(max_length=200, blank=True)
    # Consent can be narrowed per kind of message: yes to appointment reminders by
    # SMS, no to recall outreach by SMS (issue #4). Only meaningful when granted.
    appointment_reminders = models.BooleanField(default=True)
    recall_outreach = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "channel"], name="one_consent_per_channel")
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} consent: {self.get_status_display()}"

    def get_additional_data(self) -> dict:
        return {"patient_id": self.patient_id}


class ExternalIdentifier(models.Model):
    """The patient's id in another system (EHR MRN, scheduler id), so re-imports update."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="external_ids")
    system = models.CharField(max_length=40, help_text="Source system, e.g. “ehr_mrn”.")
    value = models.CharField(max_length=100)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["system", "value"], name="unique_external_id_per_system"
            )
        ]

    def __str__(self) -> str:
        return f"{self.system}: {self.value}"

    def get_additional_data(self) -> dict:
        return {"patient_id": self.patient_id}


class AppointmentType(models.Model):
    """A kind of visit (hygiene cleaning, PT evaluation…). No clinical detail."""

    name = models.CharField(max_length=100, unique=True)
    code = models.SlugField(max_length=40, unique=True)
    default_duration_minutes = models.PositiveSmallIntegerField(default=30)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Provider(models.Model):
    """A clinician patients book with; which locations they work at."""

    name = models.CharField(max_length=120)
    title = models.CharField(max_length=60, blank=True, help_text="e.g. DDS, RDH, DPT")
    locations = models.ManyToManyField(Location, related_name="providers")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}, {self.title}" if self.title else self.name


class Appointment(models.Model):
    """One visit in the patient's history: when, where, with whom, what kind, outcome."""

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        CONFIRMED = "confirmed", "Confirmed"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"
        NO_SHOW = "no_show", "No-show"

    class Source(models.TextChoices):
        MANUAL = "manual", "Entered by staff"
        IMPORT = "import", "Imported"
        API = "api", "API"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="appointments")
    location = models.ForeignKey(Location, on_delete=models.PROTECT, related_name="appointments")
    provider = models.ForeignKey(
        Provider, on_delete=models.SET_NULL, null=True, blank=True, related_name="appointments"
    )
    appointment_type = models.ForeignKey(
        AppointmentType, on_delete=models.PROTECT, related_name="appointments"
    )
    start = models.DateTimeField()
    end = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SCHEDULED)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.MANUAL)
    external_system = models.CharField(max_length=40, blank=True)
    external_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-start"]
        constraints = [
            models.CheckConstraint(
                condition=Q(end__gt=F("start")), name="appointment_ends_after_start"
            ),
            models.UniqueConstraint(
                fields=["external_system", "external_id"],
                condition=~Q(external_id=""),
                name="unique_appointment_external_id",
            ),
        ]
        indexes = [
            models.Index(fields=["patient", "-start"], name="appointment_patient_start_idx"),
            # Booked visits only (a few percent of rows): "has a satisfying booking?"
            # on Today, for one follow-up or as one hash of all future bookings.
            models.Index(
                fields=["patient", "start"],
                include=["appointment_type"],
                condition=Q(status__in=["scheduled", "confirmed"]),
                name="appointment_booked_idx",
            ),
            models.Index(fields=["location", "start"], name="appointment_location_start_idx"),
        ]

    def __str__(self) -> str:
        local = self.start.astimezone(self.location.tz)
        return f"{self.appointment_type} on {local:%Y-%m-%d %H:%M}"

    def get_additional_data(self) -> dict:
        return {"patient_id": self.patient_id}

    @property
    def local_start(self) -> dt.datetime:
        return self.start.astimezone(self.location.tz)

    @property
    def local_end(self) -> dt.datetime:
        return self.end.astimezone(self.location.tz)
