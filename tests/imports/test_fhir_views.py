"""A FHIR bundle on the import pages: upload → (no mapping) → dry run → import → report."""

from pathlib import Path

import pytest
from auditlog.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from imports import tasks
from imports.models import ImportBatch, ImportSource, ImportUpload
from patients.models import Appointment, Patient
from tests.factories import AppointmentTypeFactory, ProviderFactory

FILES = Path(__file__).resolve().parent / "files" / "fhir"
COLLECTION = FILES / "bundle-collection.json"
BROKEN_ENTRIES = FILES / "bundle-broken-entries.json"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def source(north):
    AppointmentTypeFactory(name="General Discussion", code="general-discussion")
    AppointmentTypeFactory(name="Hygiene cleaning", code="hygiene")
    ProviderFactory(name="Dr Adam Careful", locations=[north])
    return ImportSource.objects.create(name="Clinic EHR", system="clinic-ehr", location=north)


def bundle_file(path: Path = COLLECTION, name: str = "") -> SimpleUploadedFile:
    return SimpleUploadedFile(
        name or path.name, path.read_bytes(), content_type="application/fhir+json"
    )


def media_files(tmp_path) -> list[Path]:
    return [p for p in (tmp_path / "media").rglob("*") if p.is_file()]


def test_it_imports_a_fhir_bundle_from_upload_to_report(
    client, manager, source, django_capture_on_commit_callbacks
):
    client.force_login(manager)
    response = client.post(reverse("imports:upload"), {"source": source.pk, "file": bundle_file()})
    up = ImportUpload.objects.get()
    assert up.kind == ImportUpload.Kind.FHIR and up.mapping == {} and up.headers == []
    # No columns to match: the dry run ran on upload.
    assert response.status_code == 302
    assert response["Location"] == reverse("imports:preview", args=[up.pk])
    assert not Patient.objects.exists() and not Appointment.objects.exists()
    assert client.get(reverse("imports:mapping", args=[up.pk]))["Location"] == response["Location"]

    preview = client.get(response["Location"])
    assert preview.status_code == 200
    html = preview.content.decode()
    counts = {k: v for k, _, v in preview.context["counts"]}
    assert (counts["new"], counts["rejected"]) == (2, 0)
    assert {k: v for k, _, v in preview.context["appointment_counts"]}["appointments_new"] == 2
    assert "a FHIR bundle of 2 patients and 3 appointments (1 other resource skipped)" in html
    assert "Patient and Appointment resources are read; no columns to match" in html
    assert "Import the bundle" in html and "Change the column matching" not in html
    # Warnings name the entry in the bundle.
    assert preview.context["line_label"] == "Entry"
    assert any(
        "is not a Patient or Appointment; skipped" in w["reason"]
        for w in preview.context["warnings"]
    )
    up.refresh_from_db()
    assert up.preview.dry_run and up.total_rows == 5  # 2 patients + 3 appointments

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(reverse("imports:confirm", args=[up.pk]))
    assert response["Location"] == reverse("imports:progress", args=[up.pk])
    assert len(queued) == 1

    batch = ImportBatch.objects.get(pk=tasks.run_import(str(up.pk)))
    assert (batch.dry_run, batch.status, batch.created_by) == (False, "done", manager)
    assert batch.counts["new"] == 2 and batch.counts["appointments_new"] == 2
    assert set(Patient.objects.values_list("last_name", flat=True)) == {"Chalmers", "García López"}
    assert Appointment.objects.count() == 2
    assert not up.path.exists()
    created = LogEntry.objects.get_for_model(Patient).filter(action=LogEntry.Action.CREATE)
    assert {e.actor for e in created} == {manager}
    source.refresh_from_db()
    assert source.mapping == {}  # a bundle saves no column mapping

    done = client.get(reverse("imports:progress", args=[up.pk]), headers={"HX-Request": "true"})
    html = done.content.decode()
    assert "Import finished: 5 rows read" in html
    assert reverse("imports:report", args=[batch.pk]) in html


def test_it_shows_rejected_entries_by_their_number_in_the_bundle(client, manager, source):
    client.force_login(manager)
    # No .json ending: recognised by its first character.
    file = bundle_file(BROKEN_ENTRIES, name="export.txt")
    response = client.post(reverse("imports:upload"), {"source": source.pk, "file": file})
    up = ImportUpload.objects.get()
    assert response["Location"] == reverse("imports:preview", args=[up.pk])
    preview = client.get(response["Location"])
    rejected = [(r["line"], r["column"]) for r in preview.context["rejected"]]
    # In the bundle's order, whichever step refused the entry.
    assert [line for line, _ in rejected] == [2, 3, 4, 5, 6, 7]
    assert (2, "Patient.birthDate") in rejected and (6, "Appointment.status") in rejected
    html = preview.content.decode()
    assert '<th scope="col">Entry</th>' in html
    assert "birth date “1974” is not a full date (YYYY-MM-DD)" in html
    assert not Patient.objects.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "bundle.json",
            b'{"resourceType": "Bundle", "type": ',
            "“bundle.json” is not valid JSON (line 1, column 36: Expecting value).",
        ),
        (
            "patient.json",
            b'{"resourceType": "Patient", "id": "p1"}',
            "“patient.json” is a single Patient resource; "
            "export a Bundle of Patient and Appointment resources.",
        ),
        (
            "history.txt",
            b'  {"resourceType": "Bundle", "type": "history", "entry": []}',
            "“history.txt” is a Bundle of type “history”; "
            "we import collection, transaction, searchset bundles.",
        ),
    ],
)
def test_it_refuses_a_broken_bundle_with_its_message_and_keeps_nothing(
    client, manager, north, tmp_path, name, content, message
):
    client.force_login(manager)
    file = SimpleUploadedFile(name, content, content_type="application/json")
    response = client.post(
        reverse("imports:upload"), {"name": "Clinic EHR", "location": north.pk, "file": file}
    )
    assert response.status_code == 200
    assert response.context["form"].errors["file"] == [message]
    assert 'class="field-error"' in response.content.decode()
    assert not ImportSource.objects.exists() and not ImportUpload.objects.exists()
    assert not ImportBatch.objects.exists() and not media_files(tmp_path)


def test_a_bundle_without_its_dry_run_offers_one_instead_of_a_mapping(client, manager, source):
    client.force_login(manager)
    client.post(reverse("imports:upload"), {"source": source.pk, "file": bundle_file()})
    up = ImportUpload.objects.get()
    ImportUpload.objects.filter(pk=up.pk).update(preview=None)
    # Confirm without a dry run sends to the step before it: the FHIR note.
    assert client.post(reverse("imports:confirm", args=[up.pk]))["Location"] == reverse(
        "imports:mapping", args=[up.pk]
    )
    page = client.get(reverse("imports:mapping", args=[up.pk]))
    assert page.status_code == 200
    assert "FHIR bundle: Patient and Appointment resources are read" in page.content.decode()
    response = client.post(reverse("imports:mapping", args=[up.pk]))
    assert response["Location"] == reverse("imports:preview", args=[up.pk])
    up.refresh_from_db()
    assert up.preview is not None and up.preview.dry_run


@pytest.mark.parametrize("role", ["front_desk", "care_staff"])
def test_it_refuses_a_bundle_from_front_desk_and_care_staff(client, role, source, request):
    client.force_login(request.getfixturevalue(role))
    response = client.post(reverse("imports:upload"), {"source": source.pk, "file": bundle_file()})
    assert response.status_code == 404
    assert not ImportUpload.objects.exists() and not ImportBatch.objects.exists()


def test_another_locations_bundle_upload_is_a_404(client, manager, south):
    other = ImportSource.objects.create(name="South EHR", system="south-ehr", location=south)
    up = ImportUpload.objects.create(source=other, file_name="b.json", kind="fhir")
    client.force_login(manager)
    for name in ("imports:mapping", "imports:preview", "imports:progress"):
        assert client.get(reverse(name, args=[up.pk])).status_code == 404, name
    for name in ("imports:mapping", "imports:confirm"):
        assert client.post(reverse(name, args=[up.pk])).status_code == 404, name
    response = client.post(reverse("imports:upload"), {"source": other.pk, "file": bundle_file()})
    assert response.status_code == 200 and "source" in response.context["form"].errors
    assert not ImportBatch.objects.exists()


def test_the_patient_id_system_given_on_upload_is_used_and_remembered(client, manager, source):
    from patients.models import ExternalIdentifier

    client.force_login(manager)
    system = "http://ehr.example.org/mrn"
    response = client.post(
        reverse("imports:upload"),
        {"source": source.pk, "identifier_system": system, "file": bundle_file()},
    )
    up = ImportUpload.objects.get()
    assert response["Location"] == reverse("imports:preview", args=[up.pk])
    source.refresh_from_db()
    assert source.fhir_identifier_system == system
    client.post(reverse("imports:confirm", args=[up.pk]))
    tasks.run_import(str(up.pk))
    maria = Patient.objects.get(last_name="García López")
    # Her MRN, not the insurance number listed first in the bundle.
    assert ExternalIdentifier.objects.get(patient=maria).value == "MRN-2001"


def test_a_patient_id_system_with_spaces_is_refused_next_to_the_field(client, manager, source):
    client.force_login(manager)
    response = client.post(
        reverse("imports:upload"),
        {"source": source.pk, "identifier_system": "not a uri", "file": bundle_file()},
    )
    assert response.status_code == 200
    assert response.context["form"].errors["identifier_system"] == [
        "A system is a URI or OID with no spaces."
    ]
    assert not ImportUpload.objects.exists()
    source.refresh_from_db()
    assert source.fhir_identifier_system == ""
