"""Follow-up forms: contact attempts, snooze, dismiss, hand-made follow-ups, discharges,
cadence rules."""

import datetime as dt

from django import forms
from django.db.models import Q, QuerySet
from django.utils import timezone

from followups import services
from followups.models import CadenceRule, ContactAttempt, FollowupType
from locations.models import Location
from patients.models import AppointmentType


class DateInput(forms.DateInput):
    input_type = "date"


# --- Today worklist and follow-up actions -----------------------------------------


class AttemptForm(forms.Form):
    """One contact attempt, small enough to sit in a worklist row."""

    channel = forms.ChoiceField(choices=ContactAttempt.Channel.choices)
    outcome = forms.ChoiceField(choices=ContactAttempt.Outcome.choices)
    note = forms.CharField(max_length=300, required=False)
    phone = forms.CharField(max_length=20, required=False, widget=forms.HiddenInput)


class SnoozeForm(forms.Form):
    until = forms.DateField(label="Snooze until", widget=DateInput(format="%Y-%m-%d"))

    def clean_until(self) -> dt.date:
        until = self.cleaned_data["until"]
        if until <= timezone.localdate():
            raise forms.ValidationError("Pick a date after today.")
        if until > timezone.localdate() + dt.timedelta(days=366):
            raise forms.ValidationError("Snooze for at most a year; dismiss it instead.")
        return until


class DismissForm(forms.Form):
    reason = forms.CharField(
        max_length=200,
        help_text="E.g. “Moved to another dentist”, “Treatment finished elsewhere”.",
    )


class FollowupCreateForm(forms.Form):
    """A follow-up added by hand from the patient page."""

    followup_type = forms.ModelChoiceField(queryset=FollowupType.objects.none())
    location = forms.ModelChoiceField(queryset=Location.objects.none())
    due_date = forms.DateField(widget=DateInput(format="%Y-%m-%d"))
    reason = forms.CharField(max_length=200, help_text="Why this patient needs a follow-up.")

    def __init__(self, *args, locations: QuerySet[Location], **kwargs):
        super().__init__(*args, **kwargs)
        types = self.fields["followup_type"]
        assert isinstance(types, forms.ModelChoiceField)
        types.queryset = FollowupType.objects.filter(is_active=True)
        where = self.fields["location"]
        assert isinstance(where, forms.ModelChoiceField)
        where.queryset = locations.order_by("name")

    def clean_due_date(self) -> dt.date:
        due = self.cleaned_data["due_date"]
        if due < timezone.localdate() - dt.timedelta(days=365):
            raise forms.ValidationError("That is more than a year ago; check the year.")
        if due > timezone.localdate() + dt.timedelta(days=5 * 366):
            raise forms.ValidationError("That is more than five years ahead; check the year.")
        return due


class DischargeForm(forms.Form):
    location = forms.ModelChoiceField(queryset=Location.objects.none())
    discharged_on = forms.DateField(widget=DateInput(format="%Y-%m-%d"))

    def __init__(self, *args, locations: QuerySet[Location], **kwargs):
        super().__init__(*args, **kwargs)
        where = self.fields["location"]
        assert isinstance(where, forms.ModelChoiceField)
        where.queryset = locations.order_by("name")

    def clean_discharged_on(self) -> dt.date:
        day = self.cleaned_data["discharged_on"]
        if day > timezone.localdate():
            raise forms.ValidationError("A discharge cannot be in the future.")
        return day


# --- Cadence rules ------------------------------------------------------------------

# The longest interval each unit may express: ten years. Longer ones are typing
# slips, and would push due dates past what a date can hold.
_MAX_INTERVAL = {"days": 3650, "weeks": 520, "months": 120, "years": 10}


class CadenceRuleForm(forms.ModelForm):
    """A cadence rule; every way it could misfire is refused next to its field.

    `locations` are where the user manages; `all_locations_allowed` says whether
    they manage every active location, which an all-locations rule needs.
    """

    # Declared rather than generated from the model: the model's "greater than or
    # equal to 0" would answer a negative interval with a message nobody can act on.
    interval_value = forms.IntegerField(label="Every")
    max_attempts = forms.IntegerField(
        label="Max attempts",
        help_text="Lapsed after this many contact attempts without a booking.",
    )
    lapse_after_days = forms.IntegerField(
        label="Lapsed after (days past due)",
        help_text="Off the worklist when this long overdue.",
    )

    class Meta:
        model = CadenceRule
        fields = [
            "name",
            "event",
            "trigger_types",
            "interval_value",
            "interval_unit",
            "followup_type",
            "satisfying_types",
            "all_locations",
            "locations",
            "outreach_plan",
            "max_attempts",
            "lapse_after_days",
            "is_active",
        ]
        labels = {
            "event": "Starts when",
            "trigger_types": "Trigger appointment types",
            "interval_unit": "Unit",
            "followup_type": "Creates follow-up type",
            "satisfying_types": "Satisfied by",
            "all_locations": "All locations",
            "is_active": "Active",
        }
        help_texts = {
            "name": "E.g. “Hygiene recall every 6 months”.",
            "trigger_types": "Completing one of these starts the interval. Not used after a "
            "discharge.",
            "satisfying_types": "Booking one of these schedules the follow-up; completing it "
            "closes it.",
            "outreach_plan": "The messages sent around the due date; plans are set up under "
            "Outreach setup → Recall outreach plans.",
            "locations": "Where the rule applies. Only locations you manage are offered.",
            "is_active": "Inactive rules create no new follow-ups.",
        }
        widgets = {
            "event": forms.RadioSelect,
            "trigger_types": forms.CheckboxSelectMultiple,
            "satisfying_types": forms.CheckboxSelectMultiple,
            "locations": forms.CheckboxSelectMultiple,
        }
        error_messages = {
            "name": {"unique": "Another rule already has this name."},
        }

    def __init__(self, *args, locations: QuerySet[Location], all_locations_allowed: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.all_locations_allowed = all_locations_allowed
        rule = self.instance
        # Keep what the rule already uses even if since retired, so that saving
        # it does not drop an inactive type without anyone noticing.
        current: dict[str, list[int]] = {"trigger_types": [], "satisfying_types": []}
        self.closed_locations: list[Location] = []
        current_type = rule.followup_type_id if rule.followup_type_id else None
        if rule.pk:
            current["trigger_types"] = list(rule.trigger_types.values_list("pk", flat=True))
            current["satisfying_types"] = list(rule.satisfying_types.values_list("pk", flat=True))
            self.closed_locations = list(rule.locations.filter(is_active=False))
        for name in ("trigger_types", "satisfying_types"):
            _model_choices(self, name).queryset = AppointmentType.objects.filter(
                Q(is_active=True) | Q(pk__in=current[name])
            )
            self.fields[name].required = False  # refused in clean(), with a clearer message
        followup_type = _model_choices(self, "followup_type")
        followup_type.queryset = FollowupType.objects.filter(Q(is_active=True) | Q(pk=current_type))
        followup_type.empty_label = "Choose a type"
        where = _model_choices(self, "locations")
        where.queryset = locations
        where.error_messages["invalid_choice"] = "Choose only locations you manage."
        if not all_locations_allowed:
            self.fields["all_locations"].help_text = "Only for someone who manages every location."
            if not rule.pk:
                self.initial["all_locations"] = False
        for name in ("interval_value", "max_attempts", "lapse_after_days"):
            self.fields[name].widget.attrs["min"] = 1
        self._outreach_plan_choices(rule.outreach_plan)

    def _outreach_plan_choices(self, current: str) -> None:
        """The active plans by name; a plan the rule already names stays offered even
        if switched off or gone, so saving the rule does not silently drop it."""
        from reminders.models import OutreachPlan  # reminders builds on followups

        names = list(OutreachPlan.objects.filter(is_active=True).values_list("name", flat=True))
        choices = [("", "No automated outreach — call list only")] + [(n, n) for n in names]
        if current and current not in names:
            choices.append((current, f"{current} (switched off or removed)"))
        old = self.fields["outreach_plan"]
        self.fields["outreach_plan"] = forms.ChoiceField(
            choices=choices, required=False, label=old.label, help_text=old.help_text
        )

    def clean_interval_value(self) -> int:
        value = self.cleaned_data["interval_value"]
        if value < 1:
            raise forms.ValidationError(
                "The interval must be at least 1: a follow-up due on the day of the visit, "
                "or before it, would be overdue at once."
            )
        return value

    def clean_max_attempts(self) -> int:
        value = self.cleaned_data["max_attempts"]
        if value < 1:
            raise forms.ValidationError(
                "Allow at least 1 attempt, or the follow-up lapses before anyone calls."
            )
        return value

    def clean_lapse_after_days(self) -> int:
        value = self.cleaned_data["lapse_after_days"]
        if value < 1:
            raise forms.ValidationError(
                "At least 1 day, or the follow-up lapses on the day it falls due."
            )
        return value

    def clean(self):
        cleaned = super().clean() or {}
        value, unit = cleaned.get("interval_value"), cleaned.get("interval_unit")
        if value and unit in _MAX_INTERVAL and value > _MAX_INTERVAL[unit]:
            self.add_error("interval_value", f"At most 10 years ({_MAX_INTERVAL[unit]} {unit}).")
        event = cleaned.get("event")
        if event == CadenceRule.Event.COMPLETED and not cleaned.get("trigger_types"):
            self.add_error(
                "trigger_types",
                "Choose the appointment types whose completion starts this rule: a rule "
                "with no trigger type is triggered by nothing.",
            )
        elif event == CadenceRule.Event.DISCHARGED:
            cleaned["trigger_types"] = []  # a discharge is not an appointment
        if "satisfying_types" in cleaned and not cleaned["satisfying_types"]:
            self.add_error(
                "satisfying_types",
                "Choose at least one appointment type that satisfies the follow-up, or it "
                "can never be booked or closed.",
            )
        if cleaned.get("all_locations"):
            if not self.all_locations_allowed:
                self.add_error(
                    "all_locations",
                    "Only someone who manages every location can make a rule for all of "
                    "them. Untick this and choose your locations.",
                )
            cleaned["locations"] = []
        elif "locations" in cleaned:
            if not cleaned["locations"]:
                self.add_error(
                    "locations", "Choose at least one location, or tick “All locations”."
                )
            else:
                cleaned["locations"] = [*cleaned["locations"], *self.closed_locations]
        self._check_overlap(cleaned)
        return cleaned

    def _check_overlap(self, cleaned: dict) -> None:
        """Refuse a rule that would compete with another for the same follow-up."""
        needed = ("followup_type", "event", "trigger_types", "locations", "all_locations")
        if self.errors or not cleaned.get("is_active") or any(n not in cleaned for n in needed):
            return  # fix the rest first; an inactive rule creates nothing
        scope = {
            "all_locations": cleaned["all_locations"],
            "locations": cleaned["locations"],
            "trigger_types": cleaned["trigger_types"],
        }
        other = services.rule_overlapping(
            followup_type=cleaned["followup_type"],
            event=cleaned["event"],
            exclude_pk=self.instance.pk,
            **scope,
        )
        if other is not None:
            self.add_error("followup_type", services.rule_overlap_message(other, **scope))


def _model_choices(form: forms.BaseForm, name: str) -> forms.ModelChoiceField:
    """The named model-choice field, typed so its queryset can be narrowed."""
    field = form.fields[name]
    assert isinstance(field, forms.ModelChoiceField)
    return field
