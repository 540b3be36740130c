"""Outreach setup pages: a location's outreach rules, reminder schedules, recall
outreach plans and message templates (issue #4, configuration).

Access: practice managers (VIEW_REPORTS) read the setup of their locations; admins
(MANAGE_LOCATION) change it. Anything else — another location's schedule or
template, a plan used at a location the user does not run — is a 404 through the
`_get_*_for_user` helpers below.

Saving a schedule, a plan or a location's rules replans that location's future
messages in a Celery task queued after commit, so the request stays fast and the
worker never reads a configuration that was rolled back.
"""

import datetime as dt
from dataclasses import dataclass, field

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_safe

from followups.models import CadenceRule, Followup
from followups.selectors import rules_visible_to
from locations.access import MANAGE_LOCATION, VIEW_REPORTS, locations_for
from locations.models import Location
from patients.models import Appointment, Patient
from patients.selectors import patient_list
from reminders import tasks, templating
from reminders.forms import (
    LocationSettingsForm,
    MessageTemplateForm,
    OutreachPlanForm,
    ScheduleForm,
    describe_days,
    describe_minutes,
    plan_steps_formset,
    schedule_steps_formset,
)
from reminders.models import Channel, Kind, MessageTemplate, OutreachPlan, ReminderSchedule
from reminders.planning import DEFAULT_APPOINTMENT_STEPS

CHANNEL_WORDS = {"sms": "SMS", "email": "Email", "preferred": "Preferred channel"}
NEW_PLAN_STEPS = [
    {"days": -14, "channel": "email"},
    {"days": 0, "channel": "sms"},
    {"days": 14, "channel": "sms"},
]


def schedule_lines(steps: list[dict]) -> list[str]:
    """["7 days · Email", "2 hours · SMS"], earliest reminder first."""
    ordered = sorted(steps, key=lambda s: -s["minutes_before"])
    return [
        f"{describe_minutes(s['minutes_before'])} · {CHANNEL_WORDS[s['channel']]}" for s in ordered
    ]


def schedule_words(steps: list[dict]) -> str:
    """Worded as the spec says it: "email 7 days, SMS 2 days, SMS 2 hours"."""
    return ", ".join(
        f"{'email' if s['channel'] == 'email' else CHANNEL_WORDS[s['channel']]} "
        f"{describe_minutes(s['minutes_before'])}"
        for s in steps
    )


def plan_lines(steps: list[dict]) -> list[str]:
    ordered = sorted(steps, key=lambda s: s["days"])
    return [f"{describe_days(s['days'])} · {CHANNEL_WORDS[s['channel']]}" for s in ordered]


def _replan_after_commit(location_ids: list[int]) -> None:
    """Queue the replanning of these locations once the change is committed."""
    ids = sorted(set(location_ids))
    if ids:
        transaction.on_commit(lambda: tasks.replan_locations.delay(ids))


# --- access ---------------------------------------------------------------------------


def _get_location_for_user(request: HttpRequest, pk: int, perm: str) -> Location:
    location = locations_for(request.user, perm).filter(pk=pk).first()
    if location is None:
        raise Http404("No such location.")
    return location


def _get_schedule_for_user(request: HttpRequest, pk: int) -> ReminderSchedule:
    managed = locations_for(request.user, MANAGE_LOCATION).values("pk")
    schedule = (
        ReminderSchedule.objects.select_related("location", "appointment_type")
        .filter(pk=pk, location__in=managed)
        .first()
    )
    if schedule is None:
        raise Http404("No such reminder schedule.")
    return schedule


def _get_template_for_user(request: HttpRequest, pk: int) -> MessageTemplate:
    """A location's own template the user manages. The practice-wide defaults are
    not edited here: they speak for every location, including ones the user does
    not run."""
    managed = locations_for(request.user, MANAGE_LOCATION).values("pk")
    template = (
        MessageTemplate.objects.select_related("location")
        .filter(pk=pk, location__in=managed)
        .first()
    )
    if template is None:
        raise Http404("No such template.")
    return template


@dataclass
class PlanUse:
    """Who uses a plan: the rules the user can read, and whether they may change it."""

    rules: list[CadenceRule] = field(default_factory=list)
    hidden: int = 0
    editable: bool = False


def _plan_uses(user, plans: list[OutreachPlan]) -> dict[str, PlanUse]:
    """A plan may be changed by someone who manages every rule that names it: it
    changes what those rules' patients receive. Three queries for any number of plans."""
    can_manage = locations_for(user, MANAGE_LOCATION).exists()
    readable = {rule.pk: rule for rule in rules_visible_to(user, VIEW_REPORTS)}
    manageable = set(rules_visible_to(user, MANAGE_LOCATION).values_list("pk", flat=True))
    uses = {plan.name: PlanUse(editable=can_manage) for plan in plans}
    naming = CadenceRule.objects.filter(outreach_plan__in=list(uses)).values_list(
        "pk", "outreach_plan"
    )
    for pk, name in naming.order_by("name"):
        use = uses[name]
        if pk in readable:
            use.rules.append(readable[pk])
        else:
            use.hidden += 1
        if pk not in manageable:
            use.editable = False
    return uses


def _get_plan_for_user(request: HttpRequest, pk: int) -> OutreachPlan:
    plan = OutreachPlan.objects.filter(pk=pk).first()
    if plan is None or not _plan_uses(request.user, [plan])[plan.name].editable:
        raise Http404("No such outreach plan.")
    return plan


def _plan_locations(name: str) -> list[int]:
    """Locations where the rules naming this plan apply."""
    rules = CadenceRule.objects.filter(outreach_plan=name)
    if rules.filter(all_locations=True).exists():
        return list(Location.objects.filter(is_active=True).values_list("pk", flat=True))
    through = CadenceRule.locations.through.objects.filter(cadencerule__in=rules)
    return list(through.values_list("location_id", flat=True))


# --- the setup page of one location -------------------------------------------------


@require_safe
@never_cache
@login_required
def setup(request: HttpRequest) -> HttpResponse:
    """A location's outreach at a glance: rules, switches and reminder schedules."""
    locations = list(locations_for(request.user, VIEW_REPORTS).order_by("name"))
    if not locations:
        raise Http404("No outreach setup here.")
    chosen = request.GET.get("location", "")
    location = next((loc for loc in locations if str(loc.pk) == chosen), None)
    if chosen and location is None:
        raise Http404("No such location.")
    location = location or locations[0]
    managed = set(locations_for(request.user, MANAGE_LOCATION).values_list("pk", flat=True))
    schedules = list(
        ReminderSchedule.objects.filter(location=location)
        .select_related("appointment_type")
        .order_by("appointment_type__name")
    )
    for schedule in schedules:
        schedule.lines = schedule_lines(schedule.steps)  # type: ignore[attr-defined]
    default = next((s for s in schedules if s.appointment_type_id is None), None)
    context = {
        "location": location,
        "locations": locations,
        "can_manage": location.pk in managed,
        "default_schedule": default,
        "type_schedules": [s for s in schedules if s.appointment_type_id is not None],
        "built_in_text": schedule_words(DEFAULT_APPOINTMENT_STEPS),
        "open_days": [
            day
            for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
            if day in location.business_hours
        ],
    }
    return render(request, "reminders/setup/index.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def location_edit(request: HttpRequest, pk: int) -> HttpResponse:
    location = _get_location_for_user(request, pk, MANAGE_LOCATION)
    name = location.name
    form = LocationSettingsForm(request.POST or None, instance=location)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            form.save()
            _replan_after_commit([location.pk])
        messages.success(
            request, f"Outreach rules of {name} saved; its planned messages are being updated."
        )
        return redirect(f"{reverse('reminders:setup')}?location={location.pk}")
    return render(
        request, "reminders/setup/location_form.html", {"form": form, "location_name": name}
    )


# --- appointment-reminder schedules ---------------------------------------------------


def _schedule_page(request, *, form, steps, location, schedule=None) -> HttpResponse:
    context = {"form": form, "steps": steps, "location": location, "schedule": schedule}
    return render(request, "reminders/setup/schedule_form.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def schedule_create(request: HttpRequest, pk: int) -> HttpResponse:
    location = _get_location_for_user(request, pk, MANAGE_LOCATION)
    existing = list(ReminderSchedule.objects.filter(location=location))
    taken = [s.appointment_type_id for s in existing]
    default = next((s for s in existing if s.appointment_type_id is None), None)
    # A new type's schedule starts from what those visits get today.
    start = default.steps if default else DEFAULT_APPOINTMENT_STEPS
    form = ScheduleForm(request.POST or None, taken=taken, creating=True)
    steps = schedule_steps_formset(request.POST or None, steps=start)
    if request.method == "POST" and all([form.is_valid(), steps.is_valid()]):
        try:
            with transaction.atomic():
                ReminderSchedule.objects.create(
                    location=location,
                    appointment_type=form.cleaned_data["appointment_type"],
                    steps=steps.steps,
                    is_active=form.cleaned_data["is_active"],
                )
                _replan_after_commit([location.pk])
        except IntegrityError:
            form.add_error(
                "appointment_type", "Someone just added a schedule for these visits; edit it."
            )
        else:
            messages.success(request, f"Reminder schedule added at {location.name}.")
            return redirect(f"{reverse('reminders:setup')}?location={location.pk}")
    return _schedule_page(request, form=form, steps=steps, location=location)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def schedule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    schedule = _get_schedule_for_user(request, pk)
    form = ScheduleForm(
        request.POST or None, taken=[], creating=False, initial={"is_active": schedule.is_active}
    )
    steps = schedule_steps_formset(request.POST or None, steps=schedule.steps)
    if request.method == "POST" and all([form.is_valid(), steps.is_valid()]):
        with transaction.atomic():
            schedule.steps = steps.steps
            schedule.is_active = form.cleaned_data["is_active"]
            schedule.save()
            _replan_after_commit([schedule.location_id])
        state = "saved" if schedule.is_active else "switched off"
        messages.success(request, f"Reminder schedule “{schedule}” {state}.")
        return redirect(f"{reverse('reminders:setup')}?location={schedule.location_id}")
    return _schedule_page(
        request, form=form, steps=steps, location=schedule.location, schedule=schedule
    )


# --- recall outreach plans ------------------------------------------------------------


@require_safe
@never_cache
@login_required
def plans(request: HttpRequest) -> HttpResponse:
    if not locations_for(request.user, VIEW_REPORTS).exists():
        raise Http404("No outreach plans here.")
    plan_rows = list(OutreachPlan.objects.order_by("-is_active", "name"))
    uses = _plan_uses(request.user, plan_rows)
    for plan in plan_rows:
        plan.lines = plan_lines(plan.steps)  # type: ignore[attr-defined]
        plan.use = uses[plan.name]  # type: ignore[attr-defined]
    context = {
        "plans": plan_rows,
        "can_create": locations_for(request.user, MANAGE_LOCATION).exists(),
    }
    return render(request, "reminders/setup/plan_list.html", context)


def _plan_valid(form: OutreachPlanForm, steps) -> bool:
    """Both the plan and its lines are valid. The lines go onto the plan first: the
    model's own check of its steps runs inside the form's validation."""
    steps_ok = steps.is_valid()
    if steps_ok:
        form.instance.steps = steps.steps
    elif not form.instance.steps:
        # Never saved: the lines' own errors are what the page shows.
        form.instance.steps = NEW_PLAN_STEPS
    return form.is_valid() and steps_ok


def _save_plan(form: OutreachPlanForm, *, old_name: str = "") -> OutreachPlan:
    """Save a plan; a renamed plan takes its rules along (they name it by name)."""
    with transaction.atomic():
        plan = form.save()
        if old_name and old_name != plan.name:
            for rule in CadenceRule.objects.filter(outreach_plan=old_name):
                rule.outreach_plan = plan.name
                rule.save(update_fields=["outreach_plan"])  # one audited row each
        _replan_after_commit(_plan_locations(plan.name))
    return plan


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def plan_create(request: HttpRequest) -> HttpResponse:
    if not locations_for(request.user, MANAGE_LOCATION).exists():
        raise Http404("You cannot manage outreach plans.")
    form = OutreachPlanForm(request.POST or None)
    steps = plan_steps_formset(request.POST or None, steps=NEW_PLAN_STEPS)
    if request.method == "POST" and _plan_valid(form, steps):
        plan = _save_plan(form)
        messages.success(request, f"Outreach plan “{plan.name}” added.")
        return redirect("reminders:plans")
    return render(request, "reminders/setup/plan_form.html", {"form": form, "steps": steps})


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def plan_edit(request: HttpRequest, pk: int) -> HttpResponse:
    plan = _get_plan_for_user(request, pk)
    saved_name = plan.name
    form = OutreachPlanForm(request.POST or None, instance=plan)
    steps = plan_steps_formset(request.POST or None, steps=plan.steps)
    if request.method == "POST" and _plan_valid(form, steps):
        plan = _save_plan(form, old_name=saved_name)
        messages.success(request, f"Outreach plan “{plan.name}” saved.")
        return redirect("reminders:plans")
    context = {"form": form, "steps": steps, "plan_name": saved_name}
    return render(request, "reminders/setup/plan_form.html", context)


# --- message templates ----------------------------------------------------------------


@dataclass
class TemplateGroup:
    """One kind × channel × language: the default and the overrides the user can read."""

    kind: str
    channel: str
    language: str
    default: MessageTemplate | None = None
    built_in: tuple[str, str] | None = None
    overrides: list[MessageTemplate] = field(default_factory=list)
    missing: list[Location] = field(default_factory=list)

    @property
    def kind_label(self) -> str:
        return Kind(self.kind).label

    @property
    def channel_label(self) -> str:
        return Channel(self.channel).label

    @property
    def language_label(self) -> str:
        return str(dict(Patient.Language.choices).get(self.language, self.language))

    @property
    def default_body(self) -> str:
        if self.default is not None:
            return self.default.body
        return self.built_in[1] if self.built_in else ""


@require_safe
@never_cache
@login_required
def template_list(request: HttpRequest) -> HttpResponse:
    readable = list(locations_for(request.user, VIEW_REPORTS).order_by("name"))
    if not readable:
        raise Http404("No templates here.")
    managed_pks = set(locations_for(request.user, MANAGE_LOCATION).values_list("pk", flat=True))
    managed = [loc for loc in readable if loc.pk in managed_pks]
    rows = MessageTemplate.objects.filter(
        Q(location__isnull=True) | Q(location__in=readable)
    ).select_related("location")
    groups: dict[tuple[str, str, str], TemplateGroup] = {}
    for key, built_in in templating.DEFAULTS.items():
        groups[key] = TemplateGroup(*key, built_in=built_in)
    for row in rows:
        key = (row.kind, row.channel, row.language)
        group = groups.setdefault(key, TemplateGroup(*key))
        if row.location_id is None:
            group.default = row
        else:
            group.overrides.append(row)
    kinds = list(Kind.values)
    ordered = sorted(
        groups.values(),
        key=lambda g: (kinds.index(g.kind), g.channel != Channel.SMS, g.language != "en"),
    )
    for group in ordered:
        have = {row.location_id for row in group.overrides}
        group.missing = [loc for loc in managed if loc.pk not in have]
    context = {"groups": ordered, "managed": managed}
    return render(request, "reminders/setup/template_list.html", context)


def _preview_patients(request: HttpRequest, location: Location) -> QuerySet[Patient]:
    return patient_list(user=request.user, location=location).select_related(None)


def _sample_moment(location: Location) -> dt.datetime:
    """Tomorrow at 9:30 on the location's clock, for a patient with no visit booked."""
    tomorrow = dt.datetime.now(tz=location.tz).date() + dt.timedelta(days=1)
    return dt.datetime.combine(tomorrow, dt.time(9, 30), tzinfo=location.tz)


@dataclass
class Preview:
    patient: Patient
    subject: str
    body: str
    segments: int | None
    when_note: str


def _preview(form: MessageTemplateForm, location: Location) -> Preview | None:
    """The template as this patient would receive it; None while its words are wrong."""
    data = form.cleaned_data
    patient_pk = data.get("preview_patient")
    kind, channel, language = data.get("kind"), data.get("channel"), data.get("language")
    subject, body = data.get("subject") or "", data.get("body")
    if not (patient_pk and kind and channel and language and body):
        return None
    try:
        templating.check_placeholders(subject)
        templating.check_placeholders(body)
    except templating.TemplateError:
        return None
    patient = Patient.objects.get(pk=patient_pk.pk)
    when: dt.datetime | dt.date
    if kind == Kind.RECALL:
        followup = (
            Followup.objects.filter(patient=patient, location=location, status="open")
            .order_by("due_date")
            .first()
        )
        when = followup.due_date if followup else timezone.localdate()
        note = "its open follow-up's due date" if followup else "today's date (no open follow-up)"
    else:
        visit = (
            Appointment.objects.filter(patient=patient, location=location, start__gt=timezone.now())
            .order_by("start")
            .first()
        )
        when = visit.start if visit else _sample_moment(location)
        note = "their next visit here" if visit else "a sample visit tomorrow at 9:30"
    values = templating.values_for(
        location=location,
        first_name=patient.preferred_name or patient.first_name,
        language=language,
        channel=channel,
        when=when,
    )
    text = templating.fill(body, values).strip()
    if channel == Channel.SMS:
        text = templating.gsm_friendly(text)  # as the sender sends it
    return Preview(
        patient=patient,
        subject=templating.fill(subject, values).strip(),
        body=text,
        segments=templating.sms_segments(text) if channel == Channel.SMS else None,
        when_note=note,
    )


def _template_page(
    request: HttpRequest,
    *,
    location: Location,
    template: MessageTemplate | None,
    initial: dict | None = None,
) -> HttpResponse:
    """Create or edit a location's template; "Preview" renders it and saves nothing."""
    form = MessageTemplateForm(
        request.POST or None,
        instance=template or MessageTemplate(),
        initial=initial,
        location=location,
        preview_patients=_preview_patients(request, location),
    )
    preview = None
    if request.method == "POST":
        valid = form.is_valid()
        if "preview" in request.POST:
            if (
                not form.cleaned_data.get("preview_patient")
                and "preview_patient" not in form.errors
            ):
                form.add_error("preview_patient", "Choose a patient to preview with.")
            preview = _preview(form, location)
        elif valid:
            with transaction.atomic():
                saved = form.save()
            messages.success(request, f"Template saved: {saved}.")
            return redirect("reminders:templates")
    context = {"form": form, "location": location, "template": template, "preview": preview}
    return render(request, "reminders/setup/template_form.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def template_create(request: HttpRequest, pk: int) -> HttpResponse:
    location = _get_location_for_user(request, pk, MANAGE_LOCATION)
    kind = request.GET.get("kind", Kind.APPOINTMENT_REMINDER)
    channel = request.GET.get("channel", Channel.SMS)
    language = request.GET.get("language", "en")
    initial = {"kind": kind, "channel": channel, "language": language}
    # Start from the words this location uses today.
    try:
        subject, body, _ = templating.template_for(
            kind=kind, channel=channel, language=language, location=location
        )
        initial.update(subject=subject, body=body)
    except LookupError:
        pass
    return _template_page(request, location=location, template=None, initial=initial)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def template_edit(request: HttpRequest, pk: int) -> HttpResponse:
    template = _get_template_for_user(request, pk)
    assert template.location is not None
    return _template_page(request, location=template.location, template=template)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def template_reset(request: HttpRequest, pk: int) -> HttpResponse:
    """Remove a location's own words; the default applies again. The audit trail
    keeps the removed text."""
    template = _get_template_for_user(request, pk)
    if request.method == "POST":
        described = str(template)
        template.delete()
        messages.success(request, f"{described}: back to the default text.")
        return redirect("reminders:templates")
    return render(request, "reminders/setup/template_reset.html", {"template": template})
