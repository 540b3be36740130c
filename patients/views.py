"""Patient list, search, patient page, create/edit, preferences and appointments.

Each view: access rule (decorators) → `*_get` selector that 404s → form → service
→ redirect. No permission queries here: they live in patients.selectors.
"""

import datetime as dt
from collections.abc import Iterator

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.utils.dateparse import parse_datetime
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_safe

from followups.models import ContactAttempt
from followups.selectors import assignable_staff, patient_followups
from locations.access import CHANGE_APPOINTMENTS, CHANGE_PATIENTS, locations_for
from locations.models import Location
from patients import selectors, services
from patients.forms import AppointmentForm, HouseholdForm, PatientForm, PreferencesForm
from patients.models import Appointment, Patient
from practicecrm import exports
from practicecrm.audit import log_access
from practicecrm.http import HtmxHttpRequest
from practicecrm.pagination import CountedPaginator
from reminders.selectors import patient_messages


def _booking_context(user) -> dict:
    """Where the user may record or edit appointments, for buttons and "Edit" links."""
    ids = set(selectors.location_ids_for(user=user, perm=CHANGE_APPOINTMENTS))
    return {"can_book": bool(ids), "bookable_location_ids": ids}


def _saved(form: AppointmentForm, request: HttpRequest) -> bool:
    """Save through the service; a rule it enforces becomes a form error, not a 500."""
    try:
        services.appointment_save(appointment=form.save(commit=False), by=request.user)
    except ValidationError as exc:
        form.add_error(None, exc)
        return False
    return True


def _viewed(request: HttpRequest, patient: Patient) -> Patient:
    """Every page that shows a patient's record writes an ACCESS entry when read."""
    if request.method == "GET":
        log_access(patient)
    return patient


def _list_filters(request: HttpRequest) -> tuple[list[Location], Location | None, str, str]:
    """The patient list's filters as the page reads them: locations, location, q, status."""
    locations = selectors.user_locations(user=request.user)
    location = next((loc for loc in locations if str(loc.pk) == request.GET.get("location")), None)
    query = request.GET.get("q", "").strip()
    status = request.GET.get("status", "")
    if status not in Patient.Status.values:
        status = ""
    return locations, location, query, status


@require_safe
@never_cache
@login_required
def patient_list(request: HtmxHttpRequest) -> HttpResponse:
    locations, location, query, status = _list_filters(request)
    patients = selectors.patient_list(
        user=request.user, query=query, location=location, status=status
    )
    # Exact up to the cap; past it "10,000+" and the pages reach that many (nobody
    # pages past the first hundred: they search). An exact count read every patient
    # of the user's locations: 1,000,000 for an admin at issue #7's 10× scale.
    cap = settings.PATIENT_LIST_COUNT_CAP
    total = selectors.visible_patient_count(patients, user=request.user, limit=cap)
    page = CountedPaginator(patients, 25, count=min(total, cap), more=total > cap).get_page(
        request.GET.get("page")
    )
    context = {
        "page": page,
        "query": query,
        "locations": locations,
        "location": location,
        "status": status,
        "statuses": Patient.Status.choices,
        "can_create": bool(selectors.location_ids_for(user=request.user, perm=CHANGE_PATIENTS)),
    }
    template = "patients/_patient_results.html" if request.htmx else "patients/patient_list.html"
    return render(request, template, context)


_EXPORT_HEADER = (
    "Last name",
    "First name",
    "Preferred name",
    "Date of birth",
    "Mobile phone",
    "Email",
    "Preferred channel",
    "Do not contact",
    "Home location",
    "Status",
)


def _export_rows(patients: QuerySet[Patient]) -> Iterator[tuple]:
    # The columns of the list page; no internal ids (the page shows no MRN either).
    for p in patients.iterator(chunk_size=exports.CHUNK_SIZE):
        yield (
            p.last_name,
            p.first_name,
            p.preferred_name if p.preferred_name != p.first_name else "",
            p.date_of_birth.isoformat() if p.date_of_birth else "",
            p.mobile_phone,
            p.email,
            p.get_preferred_channel_display(),
            "Yes" if p.do_not_contact else "",
            p.home_location.name,
            p.get_status_display(),
        )


@require_safe
@never_cache
@login_required
def patient_export(request: HttpRequest) -> HttpResponseBase:
    """The patient list as CSV or XLSX: the same search and filters, every page."""
    fmt = exports.export_format(request)
    if fmt is None:
        return exports.bad_format()
    _locations, location, query, status = _list_filters(request)
    patients = selectors.patient_list(
        user=request.user, query=query, location=location, status=status
    )
    return exports.export_response(
        request,
        fmt=fmt,
        name="patients",
        title="the patient list",
        view="patients:list",
        model=Patient,
        filters={"q": query, "location": location.name if location else "", "status": status},
        count=patients.count(),
        header=_EXPORT_HEADER,
        rows=_export_rows(patients),
    )


@require_safe
@never_cache
@login_required
def patient_detail(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        patient = selectors.patient_get(user=request.user, pk=pk)
    except Http404:
        # A merged duplicate's old address (bookmarks, old links) leads to the survivor.
        survivor = selectors.patient_merged_survivor(user=request.user, pk=pk)
        if survivor is None:
            raise
        messages.info(request, f"Record #{pk} was merged into this one.")
        return redirect(survivor)
    log_access(patient)
    timeline, next_cursor = selectors.patient_timeline(patient=patient)
    can_edit = selectors.patients_visible_to(request.user, CHANGE_PATIENTS).filter(pk=pk).exists()
    # Buckets on the patient's home location's calendar.
    followups = patient_followups(
        patient=patient, today=dt.datetime.now(tz=patient.home_location.tz).date()
    )
    context = {
        "patient": patient,
        "timeline": timeline,
        "next_cursor": next_cursor,
        "can_edit": can_edit,
        **_booking_context(request.user),
        **selectors.patient_detail_context(patient=patient, user=request.user),
        "followups": followups,
        "assignable": {
            location.pk: list(assignable_staff(location=location))
            for location in {f.location for f in followups if f.is_active}
        },
        "attempt_channels": ContactAttempt.Channel.choices,
        "attempt_outcomes": ContactAttempt.Outcome.choices,
        **patient_messages(patient=patient, user=request.user),
    }
    return render(request, "patients/patient_detail.html", context)


@require_safe
@never_cache
@login_required
def patient_timeline(request: HttpRequest, pk: int) -> HttpResponse:
    patient = _viewed(request, selectors.patient_get(user=request.user, pk=pk))
    before = parse_datetime(request.GET.get("before", "")) if request.GET.get("before") else None
    if before is None or before.tzinfo is None:
        before = None
    timeline, next_cursor = selectors.patient_timeline(patient=patient, before=before)
    return render(
        request,
        "patients/_timeline.html",
        {
            "patient": patient,
            "timeline": timeline,
            "next_cursor": next_cursor,
            **_booking_context(request.user),
        },
    )


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def patient_create(request: HttpRequest) -> HttpResponse:
    home_locations = locations_for(request.user, CHANGE_PATIENTS)
    if not home_locations.exists():
        raise Http404("You cannot add patients at any location.")
    form = PatientForm(request.POST or None, home_locations=home_locations)
    prefs = PreferencesForm(
        request.POST or None,
        contact=form.cleaned_data if form.is_bound and form.is_valid() else None,
        initial={"preferred_channel": Patient.PreferredChannel.SMS, "language": "en"},
    )
    if request.method == "POST" and form.is_valid() and prefs.is_valid():
        patient = services.patient_preferences_set(
            patient=form.save(commit=False),
            shared_with=form.cleaned_data["shared_with"],
            by=request.user,
            **prefs.preferences(),
        )
        messages.success(request, f"{patient.display_name} was added.")
        return redirect(patient)
    return render(request, "patients/patient_form.html", {"form": form, "prefs": prefs})


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def patient_edit(request: HttpRequest, pk: int) -> HttpResponse:
    patient = _viewed(
        request, selectors.patient_get(user=request.user, pk=pk, perm=CHANGE_PATIENTS)
    )
    form = PatientForm(
        request.POST or None,
        instance=patient,
        home_locations=locations_for(request.user, CHANGE_PATIENTS),
    )
    if request.method == "POST" and form.is_valid():
        patient = form.save(commit=False)
        services.patient_save(
            patient=patient, shared_with=form.cleaned_data["shared_with"], by=request.user
        )
        messages.success(request, "Contact details saved.")
        return redirect(patient)
    return render(request, "patients/patient_form.html", {"form": form, "patient": patient})


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def patient_preferences(request: HttpRequest, pk: int) -> HttpResponse:
    patient = _viewed(
        request, selectors.patient_get(user=request.user, pk=pk, perm=CHANGE_PATIENTS)
    )
    form = PreferencesForm(request.POST or None, patient=patient)
    if request.method == "POST" and form.is_valid():
        services.patient_preferences_set(patient=patient, by=request.user, **form.preferences())
        messages.success(request, "Communication preferences saved.")
        return redirect(patient)
    return render(request, "patients/preferences_form.html", {"form": form, "patient": patient})


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def patient_household(request: HttpRequest, pk: int) -> HttpResponse:
    patient = _viewed(
        request, selectors.patient_get(user=request.user, pk=pk, perm=CHANGE_PATIENTS)
    )
    households = selectors.households_visible_to(request.user)
    initial = {
        "household": patient.household,
        "is_primary": bool(
            patient.household and patient.household.primary_contact_id == patient.pk
        ),
    }
    form = HouseholdForm(request.POST or None, households=households, initial=initial)
    if request.method == "POST":
        if "create" in request.POST:
            services.household_create(patient=patient)
            messages.success(
                request, "A new household was started with this patient as its contact."
            )
            return redirect(patient)
        if form.is_valid():
            services.household_set(
                patient=patient,
                household=form.cleaned_data["household"],
                is_primary=form.cleaned_data["is_primary"],
            )
            messages.success(request, "Household saved.")
            return redirect(patient)
    return render(request, "patients/household_form.html", {"form": form, "patient": patient})


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def appointment_create(request: HttpRequest, pk: int) -> HttpResponse:
    patient = _viewed(request, selectors.patient_get(user=request.user, pk=pk))
    locations = selectors.patient_locations(
        user=request.user, patient=patient, perm=CHANGE_APPOINTMENTS
    )
    if not locations.exists():
        raise Http404("You cannot record appointments at any location.")
    appointment = Appointment(patient=patient)
    initial = {
        "location": patient.home_location_id
        if locations.filter(pk=patient.home_location_id).exists()
        else None
    }
    form = AppointmentForm(
        request.POST or None, instance=appointment, locations=locations, initial=initial
    )
    if request.method == "POST" and form.is_valid() and _saved(form, request):
        messages.success(request, "Appointment recorded.")
        return redirect(patient)
    return render(request, "patients/appointment_form.html", {"form": form, "patient": patient})


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def appointment_edit(request: HttpRequest, pk: int) -> HttpResponse:
    appointment = selectors.appointment_get(user=request.user, pk=pk, perm=CHANGE_APPOINTMENTS)
    _viewed(request, appointment.patient)
    form = AppointmentForm(
        request.POST or None,
        instance=appointment,
        # appointment_get checked CHANGE_APPOINTMENTS at its current location, which
        # stays a choice even if the patient is no longer filed there.
        locations=selectors.patient_locations(
            user=request.user, patient=appointment.patient, perm=CHANGE_APPOINTMENTS
        )
        | Location.objects.filter(pk=appointment.location_id),
    )
    if request.method == "POST" and form.is_valid() and _saved(form, request):
        messages.success(request, "Appointment saved.")
        return redirect(appointment.patient)
    return render(
        request,
        "patients/appointment_form.html",
        {"form": form, "patient": appointment.patient, "appointment": appointment},
    )
