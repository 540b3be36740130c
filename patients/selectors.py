"""Every read the patient pages need, already narrowed to what the user may see."""

import datetime as dt
from dataclasses import dataclass
from typing import Any

from auditlog.models import LogEntry
from django.db.models import Q, QuerySet
from django.http import Http404

from locations.access import CHANGE_APPOINTMENTS, VIEW_PATIENTS, locations_for
from locations.models import Location
from patients.models import Appointment, Channel, Household, Patient
from patients.search import parse_query


def patients_visible_to(user, perm: str = VIEW_PATIENTS) -> QuerySet[Patient]:
    """Patients whose home location, or a location they are shared with, grants `perm`.

    Written as two subqueries rather than a join so that the result needs no
    DISTINCT and stays one indexed query however many locations the user holds.
    """
    location_ids = locations_for(user, perm).values("pk")
    shared = Patient.shared_with.through.objects.filter(location_id__in=location_ids).values(
        "patient_id"
    )
    return Patient.objects.filter(Q(home_location_id__in=location_ids) | Q(pk__in=shared))


def patient_list(
    *, user, query: str = "", location: Location | None = None, status: str = ""
) -> QuerySet[Patient]:
    """The patient list and search box: name fragments, phone in any format, or DOB."""
    qs = patients_visible_to(user).select_related("home_location")
    if location is not None:
        shared_here = Patient.shared_with.through.objects.filter(location=location)
        qs = qs.filter(Q(home_location=location) | Q(pk__in=shared_here.values("patient_id")))
    if status:
        qs = qs.filter(status=status)
    parsed = parse_query(query)
    if parsed.dob:
        qs = qs.filter(date_of_birth=parsed.dob)
    elif parsed.phone_digits:
        qs = qs.filter(search_phones__contains=parsed.phone_digits)
    else:
        for token in parsed.name_tokens:
            qs = qs.filter(search_name__contains=token)
    return qs.order_by("last_name", "first_name", "id")


def patient_get(*, user, pk: int, perm: str = VIEW_PATIENTS) -> Patient:
    """The patient if the user may see it with `perm`; 404 otherwise — never 403.

    A 404 does not confirm that a record with this id exists at another location.
    """
    patient = (
        patients_visible_to(user, perm)
        .select_related("home_location", "household", "household__primary_contact")
        .filter(pk=pk)
        .first()
    )
    if patient is None:
        raise Http404("No such patient.")
    return patient


def patient_detail_context(*, patient: Patient, user) -> dict[str, Any]:
    """Everything the patient page shows besides the timeline, in a fixed number of queries."""
    consents = {c.channel: c for c in patient.consents.select_related("recorded_by")}
    household_members: list[Patient] = []
    if patient.household_id:
        household_members = list(
            patients_visible_to(user)
            .filter(household_id=patient.household_id)
            .exclude(pk=patient.pk)
            .order_by("date_of_birth")
        )
    return {
        "consents": consents,
        "consent_channels": Channel.choices,
        "household_members": household_members,
        "shared_with": list(patient.shared_with.all()),
        "external_ids": list(patient.external_ids.all()),
        "upcoming": list(
            patient.appointments.filter(
                start__gte=dt.datetime.now(tz=dt.UTC),
                status__in=[Appointment.Status.SCHEDULED, Appointment.Status.CONFIRMED],
            )
            .select_related("location", "appointment_type", "provider")
            .order_by("start")[:5]
        ),
    }


@dataclass(frozen=True)
class TimelineItem:
    when: dt.datetime
    kind: str  # "appointment" or "change"
    appointment: Appointment | None = None
    entry: LogEntry | None = None


def patient_timeline(
    *, patient: Patient, before: dt.datetime | None = None, limit: int = 25
) -> tuple[list[TimelineItem], dt.datetime | None]:
    """Appointments and recorded changes, newest first, `limit` at a time.

    Two queries per page: the newest `limit` appointments and the newest `limit`
    audit entries before the cursor, merged. Returns the items and the cursor for
    the next page (None on the last page).
    """
    appointments = patient.appointments.select_related(
        "location", "appointment_type", "provider"
    ).order_by("-start")
    # Accesses are shown in the audit trail, not the timeline: the timeline is about
    # the patient, and listing every look at the page would drown the changes.
    entries = (
        LogEntry.objects.filter(additional_data__patient_id=patient.pk)
        .exclude(action=LogEntry.Action.ACCESS)
        .select_related("actor", "content_type")
        .order_by("-timestamp")
    )
    if before is not None:
        appointments = appointments.filter(start__lt=before)
        entries = entries.filter(timestamp__lt=before)
    items = [TimelineItem(a.start, "appointment", appointment=a) for a in appointments[: limit + 1]]
    items += [TimelineItem(e.timestamp, "change", entry=e) for e in entries[: limit + 1]]
    items.sort(key=lambda item: item.when, reverse=True)
    page = items[:limit]
    next_cursor = page[-1].when if len(items) > limit else None
    return page, next_cursor


def appointment_get(*, user, pk: int, perm: str = VIEW_PATIENTS) -> Appointment:
    """An appointment the user may act on with `perm`, else 404.

    Seeing an appointment follows seeing its patient; changing one also needs
    CHANGE_APPOINTMENTS at the appointment's own location.
    """
    qs = Appointment.objects.filter(patient__in=patients_visible_to(user).values("pk"))
    if perm == CHANGE_APPOINTMENTS:
        qs = qs.filter(location__in=locations_for(user, CHANGE_APPOINTMENTS).values("pk"))
    appointment = (
        qs.select_related("patient", "location", "appointment_type", "provider")
        .filter(pk=pk)
        .first()
    )
    if appointment is None:
        raise Http404("No such appointment.")
    return appointment


def user_locations(*, user, perm: str = VIEW_PATIENTS) -> list[Location]:
    return list(locations_for(user, perm).order_by("name"))


def households_visible_to(user) -> QuerySet[Household]:
    """Households with at least one member the user may see, for the household picker."""
    members = patients_visible_to(user).filter(household__isnull=False).values("household_id")
    return Household.objects.filter(pk__in=members).order_by("name")
