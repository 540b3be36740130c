"""Import sources (with their saved column mapping), batches, and recall dates kept
from the old tool for the side-by-side reconciliation."""

import uuid
from pathlib import Path

from django.conf import settings
from django.db import models

from locations.models import Location
from patients.models import Patient


class ImportSource(models.Model):
    """One old tool or spreadsheet a practice imports from, week after week.

    Its saved mapping makes next week's file map itself; its `system` names the
    external ids it writes (ExternalIdentifier.system), so a re-import finds the
    same people by the source's own ids.
    """

    name = models.CharField(max_length=80, unique=True)
    system = models.SlugField(max_length=40, unique=True, help_text="e.g. old-spreadsheet")
    location = models.ForeignKey(
        Location,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Where rows without a location column belong.",
    )
    mapping = models.JSONField(default=dict, blank=True, help_text="Header → field.")
    recall_type = models.ForeignKey(
        "followups.FollowupType",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The follow-up a “next recall” column opens when the patient has none.",
    )
    fhir_identifier_system = models.CharField(
        "FHIR patient id system",
        max_length=200,
        blank=True,
        help_text="For FHIR bundles: the Patient.identifier system that is this source's "
        "patient id (e.g. the EHR's MRN URI). Empty: each patient's first identifier.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ImportBatch(models.Model):
    """One file imported (or dry-run) once: who, what, how it went."""

    class Status(models.TextChoices):
        PREVIEW = "preview", "Dry run"
        RUNNING = "running", "Importing"
        DONE = "done", "Imported"
        FAILED = "failed", "Failed"

    source = models.ForeignKey(ImportSource, on_delete=models.PROTECT, related_name="batches")
    file_name = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    mapping = models.JSONField(default=dict)
    dry_run = models.BooleanField(default=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PREVIEW)
    counts = models.JSONField(default=dict, blank=True)
    report = models.JSONField(default=dict, blank=True)
    rows_done = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        kind = "dry run" if self.dry_run else "import"
        return f"{self.file_name} ({kind}, {self.get_status_display().lower()})"


class SourceRecallDate(models.Model):
    """When the old tool says a patient is next due — kept to compare with ours."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="+")
    source = models.ForeignKey(ImportSource, on_delete=models.CASCADE, related_name="+")
    location = models.ForeignKey(Location, on_delete=models.CASCADE, related_name="+")
    due_date = models.DateField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "source"], name="one_recall_date_per_source")
        ]

    def __str__(self) -> str:
        return f"{self.source}: due {self.due_date:%Y-%m-%d}"


class ImportUpload(models.Model):
    """A file uploaded on the import pages, carried through mapping → dry run → import.

    The file itself sits outside the web root (MEDIA_ROOT/imports/<id>, never served)
    until the import has read it; the headers and a few sample values are kept here
    so the mapping page does not reread it. The dry run and the import are ordinary
    batches.
    """

    class Kind(models.TextChoices):
        TABLE = "table", "Spreadsheet (CSV or Excel)"
        FHIR = "fhir", "FHIR R4 bundle"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    source = models.ForeignKey(ImportSource, on_delete=models.CASCADE, related_name="uploads")
    file_name = models.CharField(max_length=255)
    # A FHIR bundle has fixed fields: no headers, no mapping, no mapping step.
    kind = models.CharField(max_length=5, choices=Kind.choices, default=Kind.TABLE)
    headers = models.JSONField(default=list)
    samples = models.JSONField(default=list, help_text="Up to 3 values per column.")
    mapping = models.JSONField(default=dict, blank=True)
    preview = models.ForeignKey(
        ImportBatch, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Rows in the file, counted by the dry run: the progress bar's 100 %.
    total_rows = models.PositiveIntegerField(null=True, blank=True)
    import_requested_at = models.DateTimeField(null=True, blank=True)
    batch = models.ForeignKey(
        ImportBatch, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    error = models.TextField(blank=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.file_name} for {self.source}"

    @property
    def path(self) -> Path:
        return Path(settings.MEDIA_ROOT) / "imports" / str(self.pk)
