"""Every read the patient pages need, already narrowed to what the user may see."""

import contextlib
import copy
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db.models import Q, QuerySet
from django.http import Http404

from locations.access import CHANGE_APPOINTMENTS, VIEW_PATIENTS, location_grants, locations_for
from locations.models import Location
from patients.models import Appointment, Channel, Household, Patient
from patients.search import parse_query
from practicecrm.pagination import count_each


def location_ids_for(*, user, perm: str = VIEW_PATIENTS) -> list[int]:
    """The ids of `locations_for(user, perm)`, from the user's grants read once per
    request (locations.access.location_grants).

    Lists filter on these literal ids rather than on guardian's nested permission
    subquery, for two reasons measured in benchmarks/pages.py: PostgreSQL cannot
    estimate what that subquery returns (it guesses one row) and so seq-scans
    follow-ups and patients it could read by index; and building and compiling it
    is most of a page's Python time when a page asks the same question five times.
    """
    return sorted(pk for pk, perms in location_grants(user).items() if perm in perms)


def visible_patient_q(location_ids: list[int], *, via: str = "", include_merged: bool = False) -> Q:
    """`patients_visible_to`'s rule as a condition, on a patient reached through `via`.

    `via="patient__"` puts it on a follow-up's (or any row's) patient with a join,
    so a list that already joins the patient does not read the patients twice.
    """
    shared = Patient.shared_with.through.objects.filter(location_id__in=location_ids).values(
        "patient_id"
    )
    q = Q(**{f"{via}home_location_id__in": location_ids}) | Q(**{f"{via}pk__in": shared})
    return q if include_merged else q & Q(**{f"{via}merged_into__isnull": True})


def patients_visible_to(
    user, perm: str = VIEW_PATIENTS, *, include_merged: bool = False
) -> QuerySet[Patient]:
    """Patients whose home location, or a location they are shared with, grants `perm`.

    Two conditions on literal location ids (see `location_ids_for`) rather than a
    join, so that the result needs no DISTINCT and stays one indexed query however
    many locations the user holds. A duplicate merged into another record
    (patients.merge) is history, not a patient: it is left out unless
    `include_merged`.
    """
    location_ids = location_ids_for(user=user, perm=perm)
    return Patient.objects.filter(visible_patient_q(location_ids, include_merged=include_merged))


def patient_list(
    *,
    user,
    query: str = "",
    location: Location | None = None,
    status: str = "",
    perm: str = VIEW_PATIENTS,
) -> QuerySet[Patient]:
    """The patient list and search box: name fragments, phone in any format, or DOB."""
    qs = patients_visible_to(user, perm).select_related("home_location")
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


def visible_patient_count(
    qs: QuerySet[Patient], *, user, perm: str = VIEW_PATIENTS, limit: int | None = None
) -> int:
    """COUNT(*) of a list built on `patients_visible_to(user, perm)`, in two parts
    PostgreSQL can read by index (one query). With `limit`, each part is read no
    further than `limit` + 1 rows: a result above `limit` means "more than that".

    Visibility is "home location is one of mine OR shared with one of mine"; with
    the shared half a subquery, PostgreSQL cannot combine two index scans for the
    OR and counted by reading every patient of the practice (1M at 10×: 450 ms
    for a front desk of one location). Counted as the two disjoint halves instead
    — home here, and shared here but home elsewhere — each is an index range.
    """
    ids = location_ids_for(user=user, perm=perm)
    shared = Patient.shared_with.through.objects.filter(location_id__in=ids).values("patient_id")
    halves = (
        qs.filter(home_location_id__in=ids),
        qs.filter(pk__in=shared).exclude(home_location_id__in=ids),
    )
    return sum(count_each(halves, limit=limit))


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


def patient_merged_survivor(*, user, pk: int) -> Patient | None:
    """Where a merged record's old address leads: the survivor, if the user may see it.

    The merged record must have been visible to the user too, so its id confirms
    nothing about other locations.
    """
    merged = (
        patients_visible_to(user, include_merged=True)
        .filter(pk=pk, merged_into__isnull=False)
        .values_list("merged_into_id", flat=True)
        .first()
    )
    if merged is None:
        return None
    return patients_visible_to(user).filter(pk=merged).first()


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
    # The household's reminder contact may be filed at a location the user cannot
    # see; then the page must not name them any more than it lists them.
    contact = patient.household.primary_contact if patient.household else None
    visible = contact is not None and (contact.pk == patient.pk or contact in household_members)
    household_contact = contact if visible else None
    return {
        "consents": consents,
        "consent_channels": Channel.choices,
        "household_members": household_members,
        "household_contact": household_contact,
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
    # For a change: field label → [old, new], as people read them.
    changes: dict[str, Any] = field(default_factory=dict)


def _model_field(entry: LogEntry, name: str):
    model = entry.content_type.model_class()
    try:
        return model._meta.get_field(name) if model else None
    except FieldDoesNotExist:
        return None


def _changes_for_display(entries: list[LogEntry]) -> dict[int, dict[str, Any]]:
    """What each update changed, as auditlog displays it, by entry id.

    auditlog's `changes_display_dict` fetches the object behind every changed
    foreign key with a query of its own, so a page of consent changes (recorded_by)
    or household moves would cost a query per row. Here foreign keys are named with
    one query per related model, many-to-many changes ("shared with") are spelled
    out, and auditlog formats the rest. Values are [before, after], or [sentence].
    """
    updates = [e for e in entries if e.action == LogEntry.Action.UPDATE]
    foreign_keys: dict[int, dict[str, Any]] = {}
    wanted: dict[Any, set[Any]] = defaultdict(set)
    for entry in updates:
        model = entry.content_type.model_class()
        fks = foreign_keys[entry.pk] = {}
        for name, values in entry.changes_dict.items():
            if isinstance(values, dict):  # an m2m change: handled below
                continue
            try:
                model_field = model._meta.get_field(name) if model else None
            except FieldDoesNotExist:
                continue
            if model_field is None or not (model_field.many_to_one or model_field.one_to_one):
                continue
            related = model_field.related_model
            fks[name] = (str(model_field.verbose_name), related)
            for value in values:
                with contextlib.suppress(ValidationError):  # "None", or a legacy value
                    wanted[related].add(related._meta.pk.to_python(value))
    names = {
        related: {str(obj.pk): str(obj) for obj in related._default_manager.filter(pk__in=pks)}
        for related, pks in wanted.items()
    }
    displays = {}
    for entry in updates:
        fks = foreign_keys[entry.pk]
        rest = copy.copy(entry)
        m2m = {k: v for k, v in entry.changes_dict.items() if isinstance(v, dict)}
        rest.changes = {
            k: v for k, v in entry.changes_dict.items() if k not in fks and k not in m2m
        }
        display = rest.changes_display_dict
        for name, change in m2m.items():
            verb = "added" if change.get("operation") == "add" else "removed"
            label = str(getattr(_model_field(entry, name), "verbose_name", name))
            display[label] = [f"{verb} {', '.join(change.get('objects', []))}"]
        for name, (label, related) in fks.items():
            display[label] = [
                names.get(related, {}).get(str(value), str(value))
                for value in entry.changes_dict[name]
            ]
        displays[entry.pk] = display
    return displays


def patient_timeline(
    *, patient: Patient, before: dt.datetime | None = None, limit: int = 25
) -> tuple[list[TimelineItem], dt.datetime | None]:
    """Appointments and recorded changes, newest first, `limit` at a time.

    A fixed number of queries per page: the newest `limit` appointments and the
    newest `limit` audit entries before the cursor, merged, plus one per kind of
    object their changes point to. Returns the items and the cursor for
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
        # An appointment's creation is the appointment row itself on the timeline.
        .exclude(
            action=LogEntry.Action.CREATE,
            content_type=ContentType.objects.get_for_model(Appointment),
        )
        .select_related("actor", "content_type")
        .order_by("-timestamp")
    )
    if before is not None:
        appointments = appointments.filter(start__lt=before)
        entries = entries.filter(timestamp__lt=before)
    items = [TimelineItem(a.start, "appointment", appointment=a) for a in appointments[: limit + 1]]
    changes = list(entries[: limit + 1])
    displays = _changes_for_display(changes)
    items += [
        TimelineItem(e.timestamp, "change", entry=e, changes=displays.get(e.pk, {}))
        for e in changes
    ]
    items.sort(key=lambda item: item.when, reverse=True)
    if len(items) <= limit:
        return items, None
    # The next page starts strictly before the cursor, so items sharing the cursor's
    # time (a cancelled visit and its rebooking at the same slot) must not be split
    # across the break: they move to the next page together.
    boundary = items[limit].when
    page = [item for item in items[:limit] if item.when > boundary] or items[:limit]
    return page, page[-1].when


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
    """The locations where the user holds `perm`, by name."""
    ids = location_ids_for(user=user, perm=perm)
    return list(Location.objects.filter(pk__in=ids).order_by("name")) if ids else []


def households_visible_to(user) -> QuerySet[Household]:
    """Households with at least one member the user may see, for the household picker."""
    members = patients_visible_to(user).filter(household__isnull=False).values("household_id")
    return Household.objects.filter(pk__in=members).order_by("name")


def patient_locations(*, user, patient: Patient, perm: str) -> QuerySet[Location]:
    """The patient's own locations (home and shared) where the user holds `perm`.

    Visits, follow-ups and discharges are recorded only there, so whatever they
    create lands on the worklist of staff who can see the patient.
    """
    shared = Patient.shared_with.through.objects.filter(patient=patient).values("location_id")
    return locations_for(user, perm).filter(Q(pk=patient.home_location_id) | Q(pk__in=shared))
