"""Forms of the import pages: the upload (with a new source if needed) and the mapping."""

from django import forms
from django.db.models import QuerySet
from django.utils.text import slugify

from followups.models import FollowupType
from imports.mapping import FIELDS, IGNORE
from imports.models import ImportSource
from locations.models import Location

TARGET_CHOICES = [(IGNORE, "Ignore"), *((target, label) for target, (label, _) in FIELDS.items())]


class UploadForm(forms.Form):
    source = forms.ModelChoiceField(
        queryset=ImportSource.objects.none(),
        required=False,
        empty_label="A new source…",
        help_text="Where the file comes from: its saved column mapping is used again.",
    )
    name = forms.CharField(
        label="New source name",
        max_length=80,
        required=False,
        help_text="e.g. “Old spreadsheet” or “Scheduler export”.",
    )
    location = forms.ModelChoiceField(
        queryset=Location.objects.none(),
        required=False,
        help_text="Where rows without a location column belong.",
    )
    recall_type = forms.ModelChoiceField(
        label="Recall follow-up type",
        queryset=FollowupType.objects.filter(is_active=True),
        required=False,
        help_text="Optional: the follow-up a “next recall” column opens.",
    )
    identifier_system = forms.CharField(
        label="FHIR patient id system",
        max_length=200,
        required=False,
        help_text="FHIR bundles only, optional: the Patient.identifier system that is the "
        "source's own patient id, e.g. urn:oid:1.2.36.146.595.217.0.1. Remembered for the "
        "source. Empty: each patient's first identifier.",
    )
    file = forms.FileField(
        label="File (CSV, Excel .xlsx or FHIR bundle .json)",
        help_text="A FHIR bundle needs no column matching: its dry run follows the upload.",
        widget=forms.ClearableFileInput(
            attrs={
                "accept": ".csv,.txt,.xlsx,.json,text/csv,application/json,application/fhir+json"
            }
        ),
    )

    def __init__(
        self,
        *args,
        sources: QuerySet[ImportSource],
        locations: QuerySet[Location],
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["source"].queryset = sources  # type: ignore[attr-defined]
        self.fields["location"].queryset = locations  # type: ignore[attr-defined]
        if not sources.exists():
            self.fields["source"].widget = forms.HiddenInput()

    def clean_identifier_system(self) -> str:
        value = self.cleaned_data["identifier_system"].strip()
        if any(c.isspace() for c in value):
            raise forms.ValidationError("A system is a URI or OID with no spaces.")
        return value

    def clean(self) -> dict:
        data = super().clean() or {}
        if data.get("source"):
            return data
        name = (data.get("name") or "").strip()
        if not name:
            self.add_error("name", "Choose a source, or name a new one.")
        elif ImportSource.objects.filter(name__iexact=name).exists():
            self.add_error("name", "A source with this name exists: choose it above.")
        elif not slugify(name):
            self.add_error("name", "Use some letters or digits in the name.")
        if not data.get("location"):
            self.add_error("location", "A new source needs a location.")
        return data

    def new_source(self) -> ImportSource:
        """The source to create (unsaved), with a system slug no other source uses."""
        name = self.cleaned_data["name"].strip()
        base = slugify(name)[:34]
        system, n = base, 1
        while ImportSource.objects.filter(system=system).exists():
            n += 1
            system = f"{base}-{n}"
        return ImportSource(
            name=name,
            system=system,
            location=self.cleaned_data["location"],
            recall_type=self.cleaned_data["recall_type"],
            fhir_identifier_system=self.cleaned_data["identifier_system"],
        )


class MappingForm(forms.Form):
    """One select per column of the file: which field it fills, or Ignore."""

    def __init__(self, *args, headers: list[str], mapping: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.headers = headers
        for i, header in enumerate(headers):
            self.fields[f"col_{i}"] = forms.ChoiceField(
                label=header or f"Column {i + 1}",
                choices=TARGET_CHOICES,
                required=False,
                initial=mapping.get(header, IGNORE),
            )

    def clean(self) -> dict:
        data = super().clean() or {}
        seen: dict[str, str] = {}
        for i, header in enumerate(self.headers):
            target = data.get(f"col_{i}") or IGNORE
            if not target:
                continue
            if target in seen:
                self.add_error(
                    f"col_{i}",
                    f"“{seen[target]}” is already mapped to {FIELDS[target][0].lower()}.",
                )
            else:
                seen[target] = header or f"Column {i + 1}"
        return data

    def mapping(self) -> dict[str, str]:
        return {h: self.cleaned_data.get(f"col_{i}") or IGNORE for i, h in enumerate(self.headers)}

    def rows(self):
        """(bound field, sample values) per column, for the template."""
        return [self[f"col_{i}"] for i in range(len(self.headers))]
