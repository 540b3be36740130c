"""Patient, preference and appointment forms. Errors are written for front-desk staff."""

import datetime as dt

from django import forms
from django.db.models import QuerySet

from locations.models import Location
from patients.models import (
    Appointment,
    AppointmentType,
    Channel,
    ChannelConsent,
    Household,
    Patient,
    Provider,
)
from patients.phones import InvalidPhone, normalize_phone


def _choices(form: forms.BaseForm, name: str) -> forms.ModelChoiceField:
    """The named model-choice field, typed so its queryset can be narrowed."""
    field = form.fields[name]
    assert isinstance(field, forms.ModelChoiceField)
    return field


class DateInput(forms.DateInput):
    input_type = "date"


class TimeInput(forms.TimeInput):
    input_type = "time"


class PatientForm(forms.ModelForm):
    """Contact details and locations. Phones are stored as E.164."""

    class Meta:
        model = Patient
        fields = [
            "first_name",
            "last_name",
            "preferred_name",
            "date_of_birth",
            "status",
            "mobile_phone",
            "home_phone",
            "email",
            "address_line1",
            "address_line2",
            "city",
            "region",
            "postal_code",
            "home_location",
            "shared_with",
        ]
        widgets = {
            "date_of_birth": DateInput(format="%Y-%m-%d"),
            "shared_with": forms.CheckboxSelectMultiple,
        }
        help_texts = {
            "mobile_phone": "Any format, e.g. (512) 555-0142. Used for SMS.",
            "preferred_name": "What the patient likes to be called.",
        }

    def __init__(self, *args, home_locations: QuerySet[Location], **kwargs):
        super().__init__(*args, **kwargs)
        # Staff may file a patient only at a location where they can edit patients;
        # an existing record keeps its current home even if it is elsewhere.
        allowed = home_locations
        if self.instance.pk:
            allowed = Location.objects.filter(
                pk__in=home_locations.values("pk")
            ) | Location.objects.filter(pk=self.instance.home_location_id)
        _choices(self, "home_location").queryset = allowed.order_by("name")
        # Sharing is offered only with locations the user edits patients at; shares
        # with other locations are kept as they are (see clean()), so nobody can
        # push a record to — or pull it from — a location they hold no role at.
        self._editable_ids = set(home_locations.values_list("pk", flat=True))
        _choices(self, "shared_with").queryset = home_locations.order_by("name")
        self.fields["shared_with"].required = False
        self._kept_shares = (
            [loc for loc in self.instance.shared_with.all() if loc.pk not in self._editable_ids]
            if self.instance.pk
            else []
        )

    def _clean_phone(self, field: str) -> str:
        raw = self.cleaned_data.get(field, "")
        if not raw:
            return ""
        try:
            return normalize_phone(raw)
        except InvalidPhone as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_mobile_phone(self) -> str:
        return self._clean_phone("mobile_phone")

    def clean_home_phone(self) -> str:
        return self._clean_phone("home_phone")

    def clean_date_of_birth(self) -> dt.date:
        dob = self.cleaned_data["date_of_birth"]
        if dob > dt.date.today():  # noqa: DTZ011
            raise forms.ValidationError("Date of birth cannot be in the future.")
        if dob.year < 1900:
            raise forms.ValidationError("Check the year: it is before 1900.")
        return dob

    def clean(self):
        cleaned = super().clean() or {}
        home = cleaned.get("home_location")
        if "shared_with" in cleaned:
            shared = [*cleaned["shared_with"], *self._kept_shares]
            cleaned["shared_with"] = [loc for loc in shared if loc != home]
        return cleaned


CONSENT_CHOICES = [("", "Not recorded"), *ChannelConsent.Status.choices]
# The channels reminders go out on, and the kinds of message consent can be narrowed to.
SCOPED_CHANNELS = ("sms", "email")
CONSENT_SCOPES = ("appointment_reminders", "recall_outreach")


class PreferencesForm(forms.Form):
    """Preferred channel, per-channel consent, do-not-contact and language."""

    preferred_channel = forms.ChoiceField(choices=Patient.PreferredChannel.choices)
    language = forms.ChoiceField(choices=Patient.Language.choices)
    sms_consent = forms.ChoiceField(label="SMS consent", choices=CONSENT_CHOICES, required=False)
    email_consent = forms.ChoiceField(
        label="Email consent", choices=CONSENT_CHOICES, required=False
    )
    call_consent = forms.ChoiceField(
        label="Phone call consent", choices=CONSENT_CHOICES, required=False
    )
    consent_method = forms.ChoiceField(
        label="How was consent given?",
        choices=[
            c for c in ChannelConsent.Method.choices if c[0] != ChannelConsent.Method.SMS_KEYWORD
        ],
        initial=ChannelConsent.Method.VERBAL,
        help_text="Applies to the consents you change now.",
    )
    # Consent narrowed per kind of message (issue #4); only read when consent is granted.
    sms_appointment_reminders = forms.BooleanField(label="Appointment reminders", required=False)
    sms_recall_outreach = forms.BooleanField(label="Recall outreach", required=False)
    email_appointment_reminders = forms.BooleanField(label="Appointment reminders", required=False)
    email_recall_outreach = forms.BooleanField(label="Recall outreach", required=False)
    do_not_contact = forms.BooleanField(label="Do not contact", required=False)
    do_not_contact_reason = forms.CharField(max_length=200, required=False, label="Reason")

    def __init__(
        self, *args, patient: Patient | None = None, contact: dict | None = None, **kwargs
    ):
        # `contact` is the cleaned contact data from the PatientForm submitted in the
        # same request, so a new mobile number and "prefer SMS" can be saved together.
        self.patient = patient
        self.contact = contact or {}
        if patient is not None and "initial" not in kwargs:
            rows = {c.channel: c for c in patient.consents.all()}
            consents = {ch: c.status for ch, c in rows.items()}
            kwargs["initial"] = {
                **{
                    f"{ch}_{scope}": getattr(rows[ch], scope) if ch in rows else True
                    for ch in SCOPED_CHANNELS
                    for scope in CONSENT_SCOPES
                },
                "preferred_channel": patient.preferred_channel,
                "language": patient.language,
                "do_not_contact": patient.do_not_contact,
                "do_not_contact_reason": patient.do_not_contact_reason,
                **{f"{ch}_consent": consents.get(ch, "") for ch in Channel.values},
            }
        else:
            # A new patient: consent, once granted, covers every kind of message.
            kwargs["initial"] = {
                **{f"{ch}_{scope}": True for ch in SCOPED_CHANNELS for scope in CONSENT_SCOPES},
                **kwargs.get("initial", {}),
            }
        super().__init__(*args, **kwargs)

    def _contact(self, field: str) -> str:
        if field in self.contact:
            return self.contact[field]
        return getattr(self.patient, field, "") if self.patient else ""

    def preferences(self) -> dict:
        """The cleaned data as patients.services.patient_preferences_set takes it."""
        data = self.cleaned_data
        return {
            "preferred_channel": data["preferred_channel"],
            "language": data["language"],
            "do_not_contact": data["do_not_contact"],
            "do_not_contact_reason": data["do_not_contact_reason"],
            "consents": {ch: data[f"{ch}_consent"] or None for ch in Channel.values},
            "consent_method": data["consent_method"],
            "consent_scopes": self._scopes(),
        }

    def _scopes(self) -> dict[str, dict[str, bool]] | None:
        # Unticked checkboxes are not posted at all: only a form that showed them
        # (and says so with its hidden marker) may narrow consent.
        if not self.data.get("consent_scopes"):
            return None
        return {
            ch: {scope: self.cleaned_data[f"{ch}_{scope}"] for scope in CONSENT_SCOPES}
            for ch in SCOPED_CHANNELS
        }

    def clean(self):
        cleaned = super().clean() or {}
        channel = cleaned.get("preferred_channel")
        needs = {
            "sms": ("mobile_phone", "SMS needs a mobile phone number."),
            "email": ("email", "Email needs an email address."),
            "call": (None, "Phone calls need a mobile or home phone number."),
        }
        if channel in needs:
            field, message = needs[channel]
            has = (
                bool(self._contact(field))
                if field
                else bool(self._contact("mobile_phone") or self._contact("home_phone"))
            )
            if not has:
                self.add_error("preferred_channel", message)
            if channel == "sms" and self.patient and self.patient.sms_opted_out_at:
                self.add_error(
                    "preferred_channel",
                    "This number replied STOP to our texts. It is opted out until the patient "
                    "texts START; choose another channel.",
                )
            if cleaned.get(f"{channel}_consent") == ChannelConsent.Status.REFUSED:
                self.add_error(
                    "preferred_channel",
                    "The patient refused this channel. Choose another, or record their consent.",
                )
        if cleaned.get("do_not_contact") and not cleaned.get("do_not_contact_reason", "").strip():
            self.add_error(
                "do_not_contact_reason", "Say why, so colleagues know whether it can change."
            )
        return cleaned


class HouseholdForm(forms.Form):
    household = forms.ModelChoiceField(
        queryset=Household.objects.none(), required=False, empty_label="No household"
    )
    is_primary = forms.BooleanField(required=False, label="Receives reminders for the household")

    def __init__(self, *args, households: QuerySet[Household], **kwargs):
        super().__init__(*args, **kwargs)
        _choices(self, "household").queryset = households


class AppointmentForm(forms.ModelForm):
    """Date and times are typed in the location's own time zone."""

    date = forms.DateField(widget=DateInput(format="%Y-%m-%d"))
    start_time = forms.TimeField(widget=TimeInput(format="%H:%M"), label="Start")
    end_time = forms.TimeField(widget=TimeInput(format="%H:%M"), label="End")

    class Meta:
        model = Appointment
        fields = ["location", "appointment_type", "provider", "status"]

    def __init__(self, *args, locations: QuerySet[Location], **kwargs):
        super().__init__(*args, **kwargs)
        _choices(self, "location").queryset = locations.order_by("name")
        _choices(self, "appointment_type").queryset = AppointmentType.objects.filter(is_active=True)
        _choices(self, "provider").queryset = Provider.objects.filter(
            is_active=True,
            pk__in=Provider.locations.through.objects.filter(
                location__in=locations.values("pk")
            ).values("provider_id"),
        )
        if self.instance.pk:
            start, end = self.instance.local_start, self.instance.local_end
            self.initial.update(date=start.date(), start_time=start.time(), end_time=end.time())
        self.order_fields(
            ["location", "appointment_type", "provider", "date", "start_time", "end_time", "status"]
        )

    def clean(self):
        cleaned = super().clean() or {}
        location, day = cleaned.get("location"), cleaned.get("date")
        start_time, end_time = cleaned.get("start_time"), cleaned.get("end_time")
        provider = cleaned.get("provider")
        if provider and location and not provider.locations.filter(pk=location.pk).exists():
            self.add_error("provider", f"{provider} does not work at {location}.")
        if location and day and start_time and end_time:
            start = _local_datetime(self, "start_time", day, start_time, location)
            end = _local_datetime(self, "end_time", day, end_time, location)
            if start and end:
                # Compared as instants: across a DST change wall-clock order can lie.
                if end <= start:
                    self.add_error("end_time", "The appointment must end after it starts.")
                else:
                    self.instance.start, self.instance.end = start, end
        return cleaned


def _local_datetime(
    form: forms.BaseForm, field: str, day: dt.date, time: dt.time, location: Location
) -> dt.datetime | None:
    """`day` at `time` on the location's clock, or a field error if no such moment exists.

    When clocks spring forward (2:00 → 3:00) the times in between never happen;
    zoneinfo would silently shift them by an hour, so the user is asked instead.
    """
    local = dt.datetime.combine(day, time, tzinfo=location.tz)
    round_trip = local.astimezone(dt.UTC).astimezone(location.tz)
    if round_trip.replace(tzinfo=None) != local.replace(tzinfo=None):
        form.add_error(
            field,
            f"{time:%-I:%M %p} does not exist on {day:%b %-d, %Y} at {location}: clocks move "
            "forward that night. Choose a time outside the skipped hour.",
        )
        return None
    # As UTC: Python compares two times of one zone by their wall clocks.
    return local.astimezone(dt.UTC)
