"""Locations of the practice group and the per-location role grants of staff."""

import datetime as dt
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


def default_business_hours() -> dict[str, list[str]]:
    weekday = ["08:00", "18:00"]
    return {"mon": weekday, "tue": weekday, "wed": weekday, "thu": weekday, "fri": weekday}


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"“{value}” is not an IANA time zone such as America/Chicago.")


def validate_business_hours(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError('Business hours must look like {"mon": ["08:00", "18:00"], …}.')
    for day, hours in value.items():
        if day not in WEEKDAYS:
            raise ValidationError(f"“{day}” is not a weekday; use {', '.join(WEEKDAYS)}.")
        ok = (
            isinstance(hours, list)
            and len(hours) == 2
            and all(isinstance(h, str) and len(h) == 5 and h[2] == ":" for h in hours)
            and hours[0] < hours[1]
        )
        if not ok:
            raise ValidationError(f"{day}: give opening and closing time as [“08:00”, “18:00”].")


class Location(models.Model):
    """One clinic of the practice group.

    Access to patients is granted per location (see locations.access): the custom
    permissions below are assigned with django-guardian on Location rows, never
    globally and never per patient.
    """

    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=60, unique=True)
    time_zone = models.CharField(
        max_length=64, default="America/New_York", validators=[validate_time_zone]
    )
    address_line1 = models.CharField("address", max_length=200, blank=True)
    address_line2 = models.CharField("address line 2", max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    region = models.CharField("state / region", max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    phone = models.CharField(max_length=20, blank=True, help_text="Call-back number, E.164.")
    sms_from_number = models.CharField(
        "SMS sending number", max_length=20, blank=True, help_text="E.164, e.g. +15125550100."
    )
    sms_messaging_service_sid = models.CharField(
        "Twilio messaging service SID", max_length=40, blank=True, help_text="Starts with MG."
    )
    email_from = models.EmailField("email from-address", blank=True)
    business_hours = models.JSONField(
        default=default_business_hours, validators=[validate_business_hours]
    )
    module_recalls = models.BooleanField("recalls module", default=True)
    module_appointment_reminders = models.BooleanField("appointment reminders", default=False)
    module_intake = models.BooleanField("intake module", default=False)
    module_memberships = models.BooleanField("memberships module", default=False)
    module_referrals = models.BooleanField("referrals module", default=False)
    # Outreach rules (issue #4): when messages may go out and how many a patient gets.
    quiet_hours_start = models.TimeField(
        "send from", default=dt.time(8), help_text="Local time; nothing goes out before."
    )
    quiet_hours_end = models.TimeField(
        "send until", default=dt.time(20), help_text="Local time; later messages wait."
    )
    cap_per_day = models.PositiveSmallIntegerField(
        "messages per patient per day", default=1, help_text="Reminders and recalls together."
    )
    cap_per_week = models.PositiveSmallIntegerField("messages per patient per 7 days", default=3)
    household_grouping = models.BooleanField(
        default=True,
        help_text="One message a day to a household's primary contact for the whole family.",
    )
    shadow_mode = models.BooleanField(
        default=False,
        help_text="Reminders are planned and recorded as if sent, but nothing leaves: "
        "for running beside the old spreadsheet.",
    )
    # Issue #6: the first day the location worked its recalls in PracticeCRM. The
    # pilot report compares the weeks before it with the weeks after.
    go_live_date = models.DateField(
        "go-live date",
        null=True,
        blank=True,
        help_text="First day of the pilot at this location (pilot report); empty if none.",
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        # Object-level permissions, granted per location through LocationGrant.
        permissions = [
            ("view_patients", "View patients and their history at this location"),
            ("change_patients", "Create and edit patients and their preferences"),
            ("change_appointments", "Record and edit appointments"),
            ("view_reports", "View dashboards and reports"),
            ("manage_location", "Manage the location's settings, templates and cadences"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    def open_days(self) -> set[int]:
        """Weekdays (0 = Monday) the location is open; no messages on the others."""
        return {WEEKDAYS.index(day) for day in self.business_hours}

    def may_send_at(self, moment: dt.datetime) -> bool:
        local = moment.astimezone(self.tz)
        return (
            local.weekday() in self.open_days()
            and self.quiet_hours_start <= local.time() < self.quiet_hours_end
        )

    def next_send_time(self, moment: dt.datetime) -> dt.datetime:
        """The first moment at or after `moment` when a message may go out.

        Computed on the location's wall clock, so "08:00" stays 08:00 across a DST
        change; a day whose 08:00 does not exist (never, in practice) moves on.
        """
        if self.may_send_at(moment):
            return moment
        local = moment.astimezone(self.tz)
        day = local.date()
        if local.time() >= self.quiet_hours_start:
            day += dt.timedelta(days=1)
        open_days = self.open_days() or set(range(7))
        for _ in range(8):
            if day.weekday() in open_days:
                start = dt.datetime.combine(day, self.quiet_hours_start, tzinfo=self.tz)
                # Round-trip through UTC to resolve a time inside a DST gap.
                return start.astimezone(dt.UTC)
            day += dt.timedelta(days=1)
        raise AssertionError("unreachable: a week always has an open day")

    def clean(self) -> None:
        from patients.phones import InvalidPhone, normalize_phone

        errors = {}
        for field in ("phone", "sms_from_number"):
            raw = getattr(self, field)
            if raw:
                try:
                    setattr(self, field, normalize_phone(raw))
                except InvalidPhone as exc:
                    errors[field] = str(exc)
        sid = self.sms_messaging_service_sid
        if sid and not (sid.startswith("MG") and len(sid) == 34):
            errors["sms_messaging_service_sid"] = "A messaging service SID is MG + 32 characters."
        start, end = self.quiet_hours_start, self.quiet_hours_end
        if start and end and start >= end:
            errors["quiet_hours_end"] = "“Send until” must be later than “send from”."
        if self.cap_per_day is not None and self.cap_per_week is not None:
            if self.cap_per_day < 1:
                errors["cap_per_day"] = "At least 1, or no reminder could ever go out."
            elif self.cap_per_week < self.cap_per_day:
                errors["cap_per_week"] = "The weekly limit cannot be lower than the daily one."
        if errors:
            raise ValidationError(errors)


class Role(models.TextChoices):
    FRONT_DESK = "front_desk", "Front desk"
    CARE_STAFF = "care_staff", "Care staff"
    PRACTICE_MANAGER = "practice_manager", "Practice manager"
    ADMIN = "admin", "Admin"


class LocationGrant(models.Model):
    """A role held by a staff member at one location.

    Saving or deleting a grant rewrites the user's guardian permissions on that
    location (locations.signals), so the grant is the single record an admin edits
    and the audit trail shows.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="location_grants"
    )
    location = models.ForeignKey(Location, on_delete=models.CASCADE, related_name="grants")
    role = models.CharField(max_length=32, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["location__name", "role"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "location", "role"], name="unique_grant_per_user_location_role"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} — {self.get_role_display()} at {self.location}"
