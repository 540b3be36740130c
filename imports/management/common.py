"""What the import commands share: finding (or creating) the source, the summary."""

from django.core.management.base import CommandError
from django.utils.text import slugify

from imports.models import ImportSource
from locations.models import Location

PATIENT_OUTCOMES = (
    ("new", "new"),
    ("updated", "updated"),
    ("unchanged", "unchanged"),
    ("duplicate_suspect", "duplicate suspects"),
    ("rejected", "rejected"),
)


def source_named(name: str, location_slug: str | None) -> ImportSource:
    """The source by name; created at the location when it does not exist yet."""
    source = ImportSource.objects.filter(name=name).first()
    if source is not None:
        return source
    if not location_slug:
        raise CommandError(f"No source named “{name}”; give --location to create it.")
    location = Location.objects.filter(slug=location_slug).first()
    if location is None:
        raise CommandError(f"No location with the slug “{location_slug}”.")
    return ImportSource.objects.create(name=name, system=slugify(name)[:40], location=location)


def patient_summary(counts: dict[str, int]) -> str:
    """“7 new, 0 updated, …” in the order a person reads an import's outcome."""
    return ", ".join(f"{counts.get(key, 0)} {label}" for key, label in PATIENT_OUTCOMES)
