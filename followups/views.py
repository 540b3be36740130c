"""Follow-up pages: the Today worklist, actions on a follow-up, cadence rules.

Access: reading follows patient visibility; every action needs CHANGE_PATIENTS on
the patient (front desk, practice manager, admin). Another location's follow-up is
a 404, through followups.selectors.followup_get.
"""

import datetime as dt
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import get_language
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from followups import selectors, services
from followups.forms import (
    AttemptForm,
    CadenceRuleForm,
    DischargeForm,
    DismissForm,
    FollowupCreateForm,
    SnoozeForm,
)
from followups.models import CadenceRule, ContactAttempt, Followup
from locations.access import CHANGE_PATIENTS, MANAGE_LOCATION, locations_for
from locations.models import Location
from patients.models import Patient
from patients.selectors import location_ids_for, patient_get, patient_locations, user_locations
from practicecrm import exports
from practicecrm.http import HtmxHttpRequest
from practicecrm.pagination import CountedPaginator

# --- Today worklist and follow-up actions -----------------------------------------

_SESSION_LOCATION = "worklist_location"


def _today_at(location: Location | None) -> dt.date:
    """'Today' where the work happens: the chosen location's date, else the practice's."""
    if location is not None:
        return dt.datetime.now(tz=location.tz).date()
    return timezone.localdate()


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _pick_location(request: HttpRequest, locations: list[Location]) -> Location | None:
    """The location from the picker, remembered in the session between visits."""
    if "location" in request.GET:
        request.session[_SESSION_LOCATION] = request.GET["location"]
    chosen = request.session.get(_SESSION_LOCATION, "")
    return next((loc for loc in locations if str(loc.pk) == chosen), None)


def _default_channel(patient: Patient) -> str:
    return {"sms": "sms", "email": "email"}.get(patient.preferred_channel, "call")


def _row_context(followup: Followup, *, can_act: bool) -> dict:
    patient = followup.patient
    channel = _default_channel(patient)
    return {
        "f": followup,
        "consents": {c.channel: c for c in patient.consents.all()},
        "phone": patient.mobile_phone or patient.home_phone,
        "channel": channel,
        "can_act": can_act,
        # The row's attempt form starts on the patient's channel and "no answer".
        "channel_options": _options("channel", channel),
        "outcome_options": _options("outcome", ContactAttempt.Outcome.NO_ANSWER),
        "note_max_length": _NOTE_MAX_LENGTH,
    }


_NOTE_MAX_LENGTH = getattr(AttemptForm.base_fields["note"], "max_length", None)


def _choice_options(choices: Iterable[tuple[Any, Any]], selected: str) -> str:
    """<option>s for (value, label) pairs, the one whose value is `selected` selected."""
    return format_html_join(
        "",
        '<option value="{}"{}>{}</option>',
        ((value, " selected" if str(value) == selected else "", label) for value, label in choices),
    )


@lru_cache(maxsize=64)
def _options_html(field: str, selected: str, language: str | None) -> str:
    # `language` only keys the cache: the labels are translatable.
    choices = {"channel": ContactAttempt.Channel, "outcome": ContactAttempt.Outcome}[field].choices
    return _choice_options(choices, selected)


def _options(field: str, selected: str) -> str:
    """A row's <option>s for AttemptForm's `field`, written once per page and language.

    The row template writes AttemptForm out (Django renders each widget and option
    through a template of its own); looping over the choices in the template was
    still 325 options' worth of template nodes on a page of 25 rows.
    """
    return _options_html(field, selected, get_language())


def _filter_options(
    *, location_ids: list[int], filters: selectors.WorklistFilters, assigned: str
) -> dict[str, str]:
    """The <option>s of the type, provider and staff filters, the chosen one selected.

    Written here, not looped over in the template: a manager's page lists ~300
    options, and a template loop costs several template lookups per option.
    """
    choices = selectors.worklist_filter_choices(location_ids=location_ids)
    return {
        "type_options": _choice_options(
            choices["followup_types"], str(filters.followup_type_id or "")
        ),
        "provider_options": _choice_options(choices["providers"], str(filters.provider_id or "")),
        "staff_options": _choice_options(choices["staff"], assigned),
    }


def _worklist_filters(request: HttpRequest, location: Location | None) -> selectors.WorklistFilters:
    """Today's filters as the page reads them (the export reads them the same way)."""
    assigned = request.GET.get("assigned", "")
    return selectors.WorklistFilters(
        location=location,
        bucket=request.GET.get("bucket", ""),
        followup_type_id=_int(request.GET.get("type")),
        provider_id=_int(request.GET.get("provider")),
        assigned_to_id=request.user.pk if assigned == "me" else _int(assigned),
    )


@require_safe
@never_cache
@login_required
def today(request: HtmxHttpRequest) -> HttpResponse:
    locations = user_locations(user=request.user)
    if not locations:
        return render(request, "no_access.html")
    location = _pick_location(request, locations)
    assigned = request.GET.get("assigned", "")
    filters = _worklist_filters(request, location)
    day = _today_at(location)
    tabs = selectors.worklist_tab_counts(
        user=request.user, filters=filters, today=day, cap=settings.WORKLIST_COUNT_CAP
    )
    rows = selectors.worklist(user=request.user, filters=filters, today=day)
    # The tab counts already say how many rows the list has: no second COUNT(*).
    # Past the cap the pages reach as many rows as were counted, in list order.
    shown = (filters.bucket,) if filters.bucket in selectors.BUCKETS else ("overdue", "due")
    page = CountedPaginator(
        rows,
        25,
        count=sum(tabs.counts[b] for b in shown),
        more=bool(tabs.more.intersection(shown)),
    ).get_page(request.GET.get("page"))
    # The rows' locations are among the user's, already read for the picker.
    followups = selectors.with_locations(list(page.object_list), locations)
    # Per row: a follow-up at a location where the user only reads gets no actions.
    actionable = set(location_ids_for(user=request.user, perm=CHANGE_PATIENTS))
    location_ids = [loc.pk for loc in locations]
    context = {
        "page": page,
        "rows": [_row_context(f, can_act=f.location_id in actionable) for f in followups],
        "counts": tabs.counts,
        "tabs": [(b, selectors.BUCKET_LABELS[b], tabs.label(b)) for b in selectors.BUCKETS],
        "to_contact": tabs.label("overdue", "due"),
        "filters": filters,
        "assigned": assigned,
        "bucket": filters.bucket if filters.bucket in selectors.BUCKETS else "",
        "bucket_labels": selectors.BUCKET_LABELS,
        "buckets": selectors.BUCKETS,
        "day": day,
        "locations": locations,
        "location": location,
        **_filter_options(location_ids=location_ids, filters=filters, assigned=assigned),
    }
    return render(request, "followups/today.html", context)


_EXPORT_HEADER = (
    "Bucket",
    "Due date",
    "Follow-up",
    "Status",
    "Last name",
    "First name",
    "Date of birth",
    "Location",
    "Preferred channel",
    "Consent",
    "Phone",
    "Email",
    "Provider",
    "Assigned to",
    "Last attempt",
    "Last outcome",
    "Attempts",
)
_OUTCOMES = dict(ContactAttempt.Outcome.choices)


def _consent_label(patient: Patient) -> str:
    """The preferred channel's consent, worded as on the Today row."""
    if patient.preferred_channel == Patient.PreferredChannel.SMS and patient.sms_opted_out_at:
        return "Opted out"
    consent = next(
        (c for c in patient.consents.all() if c.channel == patient.preferred_channel), None
    )
    return consent.get_status_display() if consent else "No consent recorded"


def _export_rows(rows: QuerySet[Followup]) -> Iterator[tuple]:
    for f in rows.iterator(chunk_size=exports.CHUNK_SIZE):
        patient, tz = f.patient, f.location.tz
        attempted = getattr(f, "last_attempt_at", None)
        provider = f.source_appointment.provider if f.source_appointment else None
        assigned = f.assigned_to
        yield (
            selectors.BUCKET_LABELS.get(f.bucket, f.bucket),  # type: ignore[attr-defined]
            f.due_date.isoformat(),
            f.followup_type.name,
            f.get_status_display(),
            patient.last_name,
            patient.first_name,
            patient.date_of_birth.isoformat() if patient.date_of_birth else "",
            f.location.name,
            patient.get_preferred_channel_display(),
            _consent_label(patient),
            patient.mobile_phone or patient.home_phone,
            patient.email,
            str(provider) if provider else "",
            (assigned.get_full_name() or assigned.username) if assigned else "",
            # In the follow-up's location's time zone, as the page shows it.
            f"{attempted.astimezone(tz):%Y-%m-%d %H:%M %Z}" if attempted else "",
            _OUTCOMES.get(getattr(f, "last_attempt_outcome", "") or "", ""),
            getattr(f, "attempt_count", None) or 0,
        )


@require_safe
@never_cache
@login_required
def today_export(request: HttpRequest) -> HttpResponseBase:
    """The Today worklist as CSV or XLSX: the same bucket and filters, all pages."""
    locations = user_locations(user=request.user)
    if not locations:
        return render(request, "no_access.html")
    fmt = exports.export_format(request)
    if fmt is None:
        return exports.bad_format()
    location = _pick_location(request, locations)
    filters = _worklist_filters(request, location)
    day = _today_at(location)
    rows = selectors.worklist(user=request.user, filters=filters, today=day).select_related(
        "location", "source_appointment__provider"
    )
    bucket = filters.bucket if filters.bucket in selectors.BUCKETS else ""
    return exports.export_response(
        request,
        fmt=fmt,
        name=f"worklist-{bucket or 'to-contact'}",
        title="the Today worklist",
        view="followups:today",
        model=Followup,
        filters={
            "bucket": bucket or "to contact",
            "location": location.name if location else "",
            "type": filters.followup_type_id,
            "provider": filters.provider_id,
            "assigned": request.GET.get("assigned", ""),
            "day": day.isoformat(),
        },
        count=rows.count(),
        header=_EXPORT_HEADER,
        rows=_export_rows(rows),
    )


def _back(request: HttpRequest, followup: Followup) -> HttpResponse:
    """Back where the action started: a safe `next`, else the patient page."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return redirect(target)
    return redirect(followup.patient)


def _row(request: HtmxHttpRequest, followup: Followup, **extra) -> HttpResponse:
    row = selectors.worklist_row(
        user=request.user, pk=followup.pk, today=_today_at(followup.location)
    )
    context = {**_row_context(row, can_act=True), **extra}
    return render(request, "followups/_followup_row.html", context)


@require_POST
@login_required
def log_attempt(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    followup = selectors.followup_get(user=request.user, pk=pk)
    form = AttemptForm(request.POST)
    error = ""
    if form.is_valid():
        try:
            attempt = services.followup_log_attempt(
                followup=followup, by=request.user, **form.cleaned_data
            )
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            if request.htmx:
                return _row(request, followup, logged=attempt)
            messages.success(request, f"Attempt logged: {attempt.get_outcome_display()}.")
            return _back(request, followup)
    else:
        error = "Choose how you tried and what happened."
    if request.htmx:
        return _row(request, followup, error=error)
    messages.error(request, error)
    return _back(request, followup)


@require_POST
@login_required
def snooze(request: HttpRequest, pk: int) -> HttpResponse:
    followup = selectors.followup_get(user=request.user, pk=pk)
    form = SnoozeForm(request.POST)
    wake = bool(request.POST.get("wake"))
    if not wake and not form.is_valid():
        messages.error(request, f"Not snoozed: {' '.join(str(e) for e in form.errors['until'])}")
        return _back(request, followup)
    until = None if wake else form.cleaned_data["until"]
    try:
        services.followup_snooze(followup=followup, until=until, by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request,
            "The follow-up is back on the worklist."
            if wake
            else f"Snoozed until {until:%b %-d, %Y}.",
        )
    return _back(request, followup)


@require_POST
@login_required
def assign(request: HttpRequest, pk: int) -> HttpResponse:
    followup = selectors.followup_get(user=request.user, pk=pk)
    choice = request.POST.get("assigned_to", "")
    to = None
    if choice:
        to = selectors.assignable_staff(location=followup.location).filter(pk=_int(choice)).first()
        if to is None:
            messages.error(
                request, f"Not assigned: choose someone who works at {followup.location}."
            )
            return _back(request, followup)
    try:
        services.followup_assign(followup=followup, to=to, by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        who = to.get_full_name() or to.username if to else "nobody in particular"
        messages.success(request, f"Follow-up assigned to {who}.")
    return _back(request, followup)


@require_POST
@login_required
def dismiss(request: HttpRequest, pk: int) -> HttpResponse:
    followup = selectors.followup_get(user=request.user, pk=pk)
    form = DismissForm(request.POST)
    if form.is_valid():
        try:
            services.followup_dismiss(
                followup=followup, reason=form.cleaned_data["reason"], by=request.user
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return _back(request, followup)
        messages.success(request, "Follow-up dismissed. You can reopen it from the patient page.")
    else:
        messages.error(
            request, "Not dismissed: say why, so colleagues know whether to pick it up again."
        )
    return _back(request, followup)


@require_POST
@login_required
def reopen(request: HttpRequest, pk: int) -> HttpResponse:
    followup = selectors.followup_get(user=request.user, pk=pk)
    try:
        services.followup_reopen(followup=followup, by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Follow-up reopened.")
    return _back(request, followup)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def followup_create(request: HttpRequest, pk: int) -> HttpResponse:
    patient = patient_get(user=request.user, pk=pk, perm=CHANGE_PATIENTS)
    locations = patient_locations(user=request.user, patient=patient, perm=CHANGE_PATIENTS)
    form = FollowupCreateForm(
        request.POST or None,
        locations=locations,
        initial={"location": patient.home_location_id, "due_date": timezone.localdate()},
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.followup_create(patient=patient, by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            messages.success(request, "Follow-up added.")
            return redirect(patient)
    return render(request, "followups/followup_form.html", {"form": form, "patient": patient})


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def discharge(request: HttpRequest, pk: int) -> HttpResponse:
    patient = patient_get(user=request.user, pk=pk, perm=CHANGE_PATIENTS)
    locations = patient_locations(user=request.user, patient=patient, perm=CHANGE_PATIENTS)
    form = DischargeForm(
        request.POST or None,
        locations=locations,
        initial={"location": patient.home_location_id, "discharged_on": timezone.localdate()},
    )
    if request.method == "POST" and form.is_valid():
        services.discharge_record(
            patient=patient,
            location=form.cleaned_data["location"],
            on=form.cleaned_data["discharged_on"],
            by=request.user,
        )
        messages.success(request, "Discharge recorded; follow-ups after discharge were planned.")
        return redirect(patient)
    return render(request, "followups/discharge_form.html", {"form": form, "patient": patient})


# --- Cadence rules ------------------------------------------------------------------

RULE_LISTS = ("trigger_types", "satisfying_types", "locations")


def _rule_form(request: HttpRequest, rule: CadenceRule) -> CadenceRuleForm:
    locations, everywhere = selectors.rule_location_choices(user=request.user)
    return CadenceRuleForm(
        request.POST or None, instance=rule, locations=locations, all_locations_allowed=everywhere
    )


def _save_rule(request: HttpRequest, form: CadenceRuleForm) -> CadenceRule | None:
    """Save through the service, which re-checks overlaps under a lock: a competing
    rule saved by someone else since the form was validated lands on the form."""
    lists = {name: form.cleaned_data[name] for name in RULE_LISTS}
    try:
        return services.rule_save(rule=form.save(commit=False), by=request.user, **lists)
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return None


@require_safe
@never_cache
@login_required
def rules(request: HttpRequest) -> HttpResponse:
    """Managers and admins read the rules of their locations; admins change them."""
    if not selectors.can_read_rules(user=request.user):
        raise Http404("No cadence rules here.")
    rule_page = Paginator(selectors.rule_list(user=request.user), 50).get_page(
        request.GET.get("page")
    )
    context = {
        "page": rule_page,
        "can_create": locations_for(request.user, MANAGE_LOCATION).exists(),
    }
    return render(request, "followups/rule_list.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def rule_create(request: HttpRequest) -> HttpResponse:
    if not locations_for(request.user, MANAGE_LOCATION).exists():
        raise Http404("You cannot manage cadence rules at any location.")
    form = _rule_form(request, CadenceRule())
    if request.method == "POST" and form.is_valid():
        rule = _save_rule(request, form)
        if rule is not None:
            messages.success(request, f"Rule “{rule.name}” added.")
            return redirect("followups:rules")
    return render(request, "followups/rule_form.html", {"form": form})


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def rule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    rule = selectors.rule_get(user=request.user, pk=pk)
    # The form writes what was typed onto the rule; the page title keeps the saved name.
    saved_name = rule.name
    form = _rule_form(request, rule)
    if request.method == "POST" and form.is_valid() and _save_rule(request, form) is not None:
        messages.success(request, f"Rule “{rule.name}” saved.")
        return redirect("followups:rules")
    return render(request, "followups/rule_form.html", {"form": form, "rule_name": saved_name})
