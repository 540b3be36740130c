"""Outreach setup forms: location rules, reminder schedules, outreach plans, templates.

Steps are edited one line each ("7 days · Email") through a formset rather than as
JSON, so a mistake lands next to the step that has it.
"""

from typing import cast

from django import forms
from django.db.models import Q, QuerySet

from locations.models import Location
from patients.models import AppointmentType, Patient
from reminders import templating
from reminders.models import Channel, MessageTemplate, OutreachPlan, StepChannel

MINUTES_PER = {"minutes": 1, "hours": 60, "days": 24 * 60}
# Reminders further ahead than this are typing slips (minutes meant as hours…).
MAX_MINUTES_BEFORE = 90 * 24 * 60
MAX_PLAN_DAYS = 365


class TimeInput(forms.TimeInput):
    input_type = "time"


# --- Location outreach rules ----------------------------------------------------------


class LocationSettingsForm(forms.ModelForm):
    """Quiet hours, caps, household grouping, shadow mode and the outreach switches.

    Location.clean() checks the order of the quiet hours and the caps; its messages
    land next to the fields here.
    """

    class Meta:
        model = Location
        fields = [
            "module_appointment_reminders",
            "module_recalls",
            "quiet_hours_start",
            "quiet_hours_end",
            "cap_per_day",
            "cap_per_week",
            "household_grouping",
            "shadow_mode",
        ]
        labels = {
            "module_appointment_reminders": "Send appointment reminders",
            "module_recalls": "Recalls (follow-ups and recall outreach)",
            "household_grouping": "Group households",
            "shadow_mode": "Shadow mode",
        }
        widgets = {
            "quiet_hours_start": TimeInput(format="%H:%M"),
            "quiet_hours_end": TimeInput(format="%H:%M"),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("cap_per_day", "cap_per_week"):
            self.fields[name].widget.attrs["min"] = 1


# --- Steps ----------------------------------------------------------------------------


def split_minutes(minutes: int) -> tuple[int, str]:
    """10080 → (7, "days"), 120 → (2, "hours"), 90 → (90, "minutes")."""
    for unit in ("days", "hours"):
        if minutes % MINUTES_PER[unit] == 0:
            return minutes // MINUTES_PER[unit], unit
    return minutes, "minutes"


def describe_minutes(minutes: int) -> str:
    amount, unit = split_minutes(minutes)
    return f"{amount} {unit[:-1] if amount == 1 else unit}"


def describe_days(days: int) -> str:
    if days == 0:
        return "on the due date"
    word = "day" if abs(days) == 1 else "days"
    return f"{abs(days)} {word} {'before' if days < 0 else 'after'} due"


class ScheduleStepForm(forms.Form):
    """One reminder: how long before the visit, on which channel."""

    amount = forms.IntegerField(label="Before the visit", required=False)
    unit = forms.ChoiceField(
        label="Unit", choices=[(u, u.capitalize()) for u in MINUTES_PER], initial="days"
    )
    channel = forms.ChoiceField(label="Channel", choices=StepChannel.choices)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["amount"].widget.attrs.update(min=1, inputmode="numeric")

    def clean(self):
        cleaned = super().clean() or {}
        amount, unit = cleaned.get("amount"), cleaned.get("unit")
        if amount is None or unit is None:
            return cleaned
        if amount < 1:
            self.add_error(
                "amount",
                "Give a time before the visit of at least 1: a reminder after it is too late.",
            )
            return cleaned
        minutes = amount * MINUTES_PER[unit]
        if minutes > MAX_MINUTES_BEFORE:
            self.add_error("amount", "At most 90 days before the visit.")
            return cleaned
        cleaned["offset"] = minutes
        return cleaned


class PlanStepForm(forms.Form):
    """One recall message: days from the due date (negative = before) and a channel."""

    amount = forms.IntegerField(
        label="Days from due date",
        required=False,
        help_text="−14 = two weeks before, 0 = on the due date, 14 = two weeks after.",
    )
    channel = forms.ChoiceField(label="Channel", choices=StepChannel.choices)

    def clean(self):
        cleaned = super().clean() or {}
        amount = cleaned.get("amount")
        if amount is None:
            return cleaned
        if abs(amount) > MAX_PLAN_DAYS:
            self.add_error("amount", "Keep steps within a year of the due date (−365 to 365).")
            return cleaned
        cleaned["offset"] = amount
        return cleaned


class BaseStepFormSet(forms.BaseFormSet):
    """Steps as a list; a line without a time is no step (that is how one is removed),
    and a repeated time is refused next to the second line.

    `offset_key` is the key the model's JSON uses ("minutes_before" or "days").
    """

    offset_key = "minutes_before"

    def clean(self) -> None:
        if any(self.errors):
            return
        seen: dict[int, int] = {}
        for number, form in enumerate(self.forms, start=1):
            if form.cleaned_data.get("amount") is None:
                continue  # an empty time removes the line
            offset = form.cleaned_data["offset"]
            if offset in seen:
                form.add_error(
                    "amount",
                    f"Step {seen[offset]} already goes out at this time; one message per "
                    "moment — change or remove one of them.",
                )
            else:
                seen[offset] = number
        if not seen and not any(form.errors for form in self.forms):
            raise forms.ValidationError("Give at least one step.")

    @property
    def steps(self) -> list[dict]:
        """The steps in the model's JSON shape, earliest first."""
        rows = [
            {self.offset_key: form.cleaned_data["offset"], "channel": form.cleaned_data["channel"]}
            for form in self.forms
            if form.cleaned_data.get("offset") is not None
        ]
        reverse = self.offset_key == "minutes_before"
        return sorted(rows, key=lambda s: s[self.offset_key], reverse=reverse)


class ScheduleStepFormSet(BaseStepFormSet):
    offset_key = "minutes_before"


class PlanStepFormSet(BaseStepFormSet):
    offset_key = "days"


# Two spare lines for new steps: adding one needs no JavaScript.
_ScheduleSteps = forms.formset_factory(
    ScheduleStepForm, formset=ScheduleStepFormSet, extra=2, max_num=10
)
_PlanSteps = forms.formset_factory(PlanStepForm, formset=PlanStepFormSet, extra=2, max_num=10)


def schedule_steps_formset(data=None, *, steps: list[dict]) -> ScheduleStepFormSet:
    initial = []
    for step in steps:
        amount, unit = split_minutes(step["minutes_before"])
        initial.append({"amount": amount, "unit": unit, "channel": step["channel"]})
    # Posted lines are the truth: compared with the saved steps, an unchanged line
    # would count as blank and vanish.
    formset = _ScheduleSteps(data, initial=None if data else initial, prefix="steps")
    return cast(ScheduleStepFormSet, formset)


def plan_steps_formset(data=None, *, steps: list[dict]) -> PlanStepFormSet:
    initial = [{"amount": step["days"], "channel": step["channel"]} for step in steps]
    formset = _PlanSteps(data, initial=None if data else initial, prefix="steps")
    return cast(PlanStepFormSet, formset)


# --- Schedules and plans --------------------------------------------------------------


class ScheduleForm(forms.Form):
    """Which visits a schedule is for (only when it is new) and whether it is on."""

    appointment_type = forms.ModelChoiceField(
        queryset=AppointmentType.objects.none(),
        required=False,
        empty_label="All visit types (the location's default)",
        label="For",
    )
    is_active = forms.BooleanField(
        label="Active",
        required=False,
        initial=True,
        help_text="Switched off, these visits fall back to the location's default "
        "(or the built-in schedule).",
    )

    def __init__(self, *args, taken: list[int | None], creating: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.taken = taken
        if creating:
            types = self.fields["appointment_type"]
            assert isinstance(types, forms.ModelChoiceField)
            types.queryset = AppointmentType.objects.filter(is_active=True).exclude(
                pk__in=[pk for pk in taken if pk is not None]
            )
        else:
            del self.fields["appointment_type"]

    def clean_appointment_type(self):
        chosen = self.cleaned_data["appointment_type"]
        if chosen is None and None in self.taken:
            raise forms.ValidationError(
                "This location already has a default schedule; edit it, or choose a visit type."
            )
        return chosen


class OutreachPlanForm(forms.ModelForm):
    class Meta:
        model = OutreachPlan
        fields = ["name", "is_active"]
        labels = {"is_active": "Active"}
        help_texts = {
            "name": "E.g. “Standard recall”. Cadence rules choose a plan by this name.",
            "is_active": "Switched off, rules using it send nothing: their follow-ups go "
            "straight to the call list.",
        }
        error_messages = {"name": {"unique": "Another outreach plan already has this name."}}


# --- Templates ------------------------------------------------------------------------


class PatientChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj) -> str:
        return f"{obj.last_name}, {obj.first_name}"


class MessageTemplateForm(forms.ModelForm):
    """A template; its words are checked with templating.validate_template.

    `preview_patients` are the patients the user may see at the template's location;
    previewing renders with one of them and saves nothing.
    """

    preview_patient = PatientChoiceField(
        queryset=Patient.objects.none(),
        required=False,
        label="Preview with a patient",
        empty_label="Choose a patient",
        help_text="Shows the text with this patient's first name and next visit here (or a "
        "sample visit). Nothing is sent or saved.",
    )

    class Meta:
        model = MessageTemplate
        fields = ["kind", "channel", "language", "subject", "body"]
        help_texts = {"subject": "Email only."}
        widgets = {"body": forms.Textarea(attrs={"rows": 7})}

    def __init__(
        self,
        *args,
        location: Location | None,
        preview_patients: QuerySet[Patient],
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.location = location
        # Set before validation: the model's own checks see where the template is for.
        self.instance.location = location
        patients = self.fields["preview_patient"]
        assert isinstance(patients, forms.ModelChoiceField)
        patients.queryset = preview_patients
        if self.instance.pk:
            # What a template is for stays fixed; a different kind is a different row.
            for name in ("kind", "channel", "language"):
                self.fields[name].disabled = True
        allowed = ", ".join("{" + name + "}" for name in templating.PLACEHOLDERS)
        self.fields["body"].help_text = f"Placeholders you can use: {allowed}."

    def clean(self):
        cleaned = super().clean() or {}
        kind, channel = cleaned.get("kind"), cleaned.get("channel")
        language, subject = cleaned.get("language"), cleaned.get("subject", "")
        body = cleaned.get("body")
        if not (kind and channel and language and body is not None):
            return cleaned
        if channel == Channel.EMAIL and kind in templating.SMS_ONLY_KINDS:
            self.add_error("channel", "This kind of message is an SMS reply; it has no email.")
            return cleaned
        if channel == Channel.SMS:
            cleaned["subject"] = ""
        elif not subject.strip():
            self.add_error("subject", "An email needs a subject.")
        try:
            templating.check_placeholders(cleaned["subject"])
        except templating.TemplateError as exc:
            self.add_error("subject", str(exc))
            return cleaned
        try:
            templating.validate_template(
                kind=kind,
                channel=channel,
                language=language,
                location=self.location,
                subject=cleaned["subject"],
                body=body,
            )
        except templating.TemplateError as exc:
            self.add_error("body", str(exc))
        if not self.instance.pk and self._taken(kind, channel, language):
            self.add_error(
                "kind",
                "This location already has its own template for this kind, channel and "
                "language; edit that one instead.",
            )
        return cleaned

    def _taken(self, kind: str, channel: str, language: str) -> bool:
        rows = MessageTemplate.objects.filter(kind=kind, channel=channel, language=language)
        where = Q(location=self.location) if self.location else Q(location__isnull=True)
        return rows.filter(where).exists()
