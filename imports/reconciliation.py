"""Side by side: who the old tool says is due, against who PracticeCRM's cadences say.

While a practice keeps its spreadsheet for a few weeks, each import keeps the
spreadsheet's "next recall" date per patient (SourceRecallDate). For one location
and a horizon (default today + 30 days) this compares those dates with our active
follow-ups (open or contacted) due by the horizon, in three lists: due in both
(with both dates, flagged when they are more than FAR_APART days apart), due only
in the spreadsheet, due only in PracticeCRM.

Everything is a queryset — counted and paginated in the database — so the page
costs the same number of queries for 20 patients or 20,000.
"""

import datetime as dt
from dataclasses import dataclass

from django.db.models import DateField, F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from followups.models import Followup
from imports.models import ImportSource, SourceRecallDate
from locations.access import VIEW_REPORTS, locations_for
from locations.models import Location
from patients.models import Patient
from patients.selectors import patients_visible_to

DEFAULT_DAYS = 30
FAR_APART = dt.timedelta(days=30)
DUE_STATUSES = (Followup.Status.OPEN, Followup.Status.CONTACTED)
LISTS = {
    "both": "Due in both",
    "sheet": "Only in the spreadsheet",
    "crm": "Only in PracticeCRM",
}


@dataclass
class Reconciliation:
    location: Location
    source: ImportSource
    horizon: dt.date
    both: QuerySet[SourceRecallDate]  # annotated: crm_due, crm_type
    only_sheet: QuerySet[SourceRecallDate]
    only_crm: QuerySet[Patient]  # annotated: crm_due, crm_type
    far_apart: QuerySet[SourceRecallDate]

    def counts(self) -> dict[str, int]:
        return {
            "both": self.both.count(),
            "sheet": self.only_sheet.count(),
            "crm": self.only_crm.count(),
            "far_apart": self.far_apart.count(),
        }


def report_locations(*, user) -> QuerySet[Location]:
    """Where the user may read the reconciliation: practice managers and admins."""
    return locations_for(user, VIEW_REPORTS).order_by("name")


def report_sources(*, locations: QuerySet[Location]) -> QuerySet[ImportSource]:
    """Sources that file into these locations, or kept recall dates at them."""
    kept = SourceRecallDate.objects.filter(location__in=locations.values("pk")).values("source")
    return ImportSource.objects.filter(
        Q(location__in=locations.values("pk")) | Q(pk__in=kept)
    ).order_by("name")


def reconcile(
    *, user, source: ImportSource, location: Location, horizon: dt.date | None = None
) -> Reconciliation:
    """The three lists for one source at one location, due on or before `horizon`."""
    horizon = horizon or timezone.localdate() + dt.timedelta(days=DEFAULT_DAYS)
    visible = patients_visible_to(user).values("pk")
    due = Followup.objects.filter(location=location, status__in=DUE_STATUSES, due_date__lte=horizon)
    # A patient with several due follow-ups (a recall and a review) counts once, by
    # the earliest: that is when the front desk would first call them.
    earliest = due.filter(patient=OuterRef("patient")).order_by("due_date", "pk")
    kept = SourceRecallDate.objects.filter(
        source=source, location=location, due_date__lte=horizon, patient__in=visible
    )
    both = (
        kept.filter(patient__in=due.values("patient"))
        .annotate(
            crm_due=Subquery(earliest.values("due_date")[:1], output_field=DateField()),
            crm_type=Subquery(earliest.values("followup_type__name")[:1]),
        )
        .select_related("patient")
        .order_by("due_date", "patient__last_name", "pk")
    )
    far_apart = both.filter(
        Q(crm_due__gt=F("due_date") + FAR_APART) | Q(crm_due__lt=F("due_date") - FAR_APART)
    )
    only_sheet = (
        kept.exclude(patient__in=due.values("patient"))
        .select_related("patient")
        .order_by("due_date", "patient__last_name", "pk")
    )
    mine = due.filter(patient=OuterRef("pk")).order_by("due_date", "pk")
    only_crm = (
        Patient.objects.filter(pk__in=due.values("patient"))
        .filter(pk__in=visible)
        .exclude(pk__in=kept.values("patient"))
        .annotate(
            crm_due=Subquery(mine.values("due_date")[:1], output_field=DateField()),
            crm_type=Subquery(mine.values("followup_type__name")[:1]),
        )
        .order_by("crm_due", "last_name", "pk")
    )
    return Reconciliation(
        location=location,
        source=source,
        horizon=horizon,
        both=both,
        only_sheet=only_sheet,
        only_crm=only_crm,
        far_apart=far_apart,
    )


def difference_days(kept: SourceRecallDate) -> int:
    """PracticeCRM's date minus the spreadsheet's, in days (positive: we are later)."""
    crm_due: dt.date = kept.crm_due  # type: ignore[attr-defined]
    return (crm_due - kept.due_date).days
