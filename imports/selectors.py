"""Reads for the import pages, already narrowed to what the user may import into.

Importing is a manager's and an admin's job. Both roles hold VIEW_REPORTS at their
locations and front desk and care staff do not, so that permission is the rule: a
source belongs to one location, and a user works only with the sources (and their
uploads and batches) of locations where they hold it. Anything else is a 404.
"""

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from imports.models import ImportBatch, ImportSource, ImportUpload
from locations.access import VIEW_REPORTS, holds_anywhere, locations_for
from locations.models import Location
from patients.selectors import patients_visible_to

IMPORT_PERM = VIEW_REPORTS


def import_locations(*, user) -> QuerySet[Location]:
    return locations_for(user, IMPORT_PERM)


def can_import(*, user) -> bool:
    return holds_anywhere(user, IMPORT_PERM)


def source_list(*, user) -> QuerySet[ImportSource]:
    return ImportSource.objects.filter(
        location__in=import_locations(user=user).values("pk")
    ).select_related("location")


def upload_get(*, user, pk) -> ImportUpload:
    uploads = ImportUpload.objects.select_related("source", "preview", "batch")
    return get_object_or_404(uploads.filter(source__in=source_list(user=user).values("pk")), pk=pk)


def batch_list(*, user) -> QuerySet[ImportBatch]:
    return ImportBatch.objects.filter(
        source__in=source_list(user=user).values("pk")
    ).select_related("source", "created_by")


def batch_get(*, user, pk: int) -> ImportBatch:
    return get_object_or_404(batch_list(user=user), pk=pk)


def visible_patient_ids(*, user, ids: set[int]) -> set[int]:
    """Of these patients (a dry run's look-alikes), the ones the user may open."""
    if not ids:
        return set()
    return set(patients_visible_to(user).filter(pk__in=ids).values_list("pk", flat=True))
