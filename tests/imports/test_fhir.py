"""FHIR R4 bundles: the same matching, upsert and audit as a spreadsheet."""

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command

from imports.fhir import import_fhir_bundle
from imports.models import ImportBatch, ImportSource
from imports.readers import UnreadableFile
from patients.models import Appointment, ExternalIdentifier, Patient
from tests.factories import AppointmentTypeFactory, LocationFactory, ProviderFactory

FILES = Path(__file__).resolve().parent / "files" / "fhir"
COLLECTION = FILES / "bundle-collection.json"
TRANSACTION = FILES / "bundle-transaction.json"
BROKEN = FILES / "bundle-broken-entries.json"
CHICAGO = ZoneInfo("America/Chicago")

pytestmark = pytest.mark.django_db


@pytest.fixture
def source(db):
    austin = LocationFactory(name="Austin", slug="austin", time_zone="America/Chicago")
    AppointmentTypeFactory(name="General Discussion", code="general-discussion")
    AppointmentTypeFactory(name="Hygiene cleaning", code="hygiene")
    ProviderFactory(name="Dr Adam Careful", locations=[austin])
    return ImportSource.objects.create(name="Clinic EHR", system="clinic-ehr", location=austin)


def test_it_imports_the_hl7_example_shapes(source):
    batch = import_fhir_bundle(source=source, path=COLLECTION, dry_run=False)
    assert batch.counts == {
        "new": 2,
        "appointments_new": 2,
        "appointments_not_booked": 1,
        "fhir_patients": 2,
        "fhir_appointments": 3,
        "fhir_skipped": 1,
        "warnings": 3,  # the Australian mobile, the proposed visit, the Observation
    }
    peter = Patient.objects.get(last_name="Chalmers")
    assert (peter.first_name, peter.preferred_name, peter.date_of_birth) == (
        "Peter",
        "Jim",
        dt.date(1974, 12, 25),
    )
    # An Australian mobile in a US practice is reported and left empty, never
    # guessed; the work number is not a contact number we keep.
    assert (peter.mobile_phone, peter.home_phone) == ("", "")
    assert (peter.address_line1, peter.city, peter.region, peter.postal_code) == (
        "534 Erewhon St",
        "PleasantVille",
        "Vic",
        "3999",
    )
    assert ExternalIdentifier.objects.get(patient=peter).value == "12345"
    maria = Patient.objects.get(last_name="García López")
    assert (maria.first_name, maria.mobile_phone, maria.home_phone, maria.email) == (
        "María",
        "+15125550142",
        "+15125550143",
        "maria.garcia@example.org",
    )
    assert maria.language == "es"  # the preferred communication, es-MX
    assert maria.address_line1 == "1200 Barton Springs Rd, Apt 4"
    # No identifier system configured: the first identifier is the source's id.
    assert ExternalIdentifier.objects.get(patient=maria).value == "INS-99881"

    visit = Appointment.objects.get(patient=peter)
    assert visit.start == dt.datetime(2027, 1, 12, 14, tzinfo=dt.UTC)
    assert visit.end == dt.datetime(2027, 1, 12, 16, tzinfo=dt.UTC)
    assert visit.start.astimezone(CHICAGO).hour == 8
    assert (visit.status, visit.appointment_type.name, visit.provider.name) == (
        "scheduled",
        "General Discussion",
        "Dr Adam Careful",
    )
    assert (visit.external_system, visit.external_id) == ("clinic-ehr", "example")
    cleaning = Appointment.objects.get(patient=maria)
    assert (cleaning.status, cleaning.external_id) == ("completed", "A-77")
    assert cleaning.start == dt.datetime(2026, 11, 2, 16, 30, tzinfo=dt.UTC)  # -06:00
    # Clinical content is never held.
    assert "MRI" not in json.dumps(batch.report)


def test_an_identifier_system_picks_the_source_id(source):
    import_fhir_bundle(
        source=source,
        path=COLLECTION,
        dry_run=False,
        identifier_system="http://ehr.example.org/mrn",
    )
    maria = Patient.objects.get(last_name="García López")
    assert ExternalIdentifier.objects.get(patient=maria).value == "MRN-2001"


def test_reimporting_the_same_bundle_changes_nothing(source):
    import_fhir_bundle(source=source, path=COLLECTION, dry_run=False)
    entries = LogEntry.objects.count()
    again = import_fhir_bundle(source=source, path=COLLECTION, dry_run=False)
    assert again.counts["unchanged"] == 2
    assert again.counts["appointments_unchanged"] == 2
    assert not {"new", "updated", "appointments_new", "appointments_updated"} & set(again.counts)
    assert Patient.objects.count() == 2 and Appointment.objects.count() == 2
    assert LogEntry.objects.count() == entries + 1  # only the batch's own entry


def test_a_moved_appointment_and_a_changed_phone_update_in_place(source, tmp_path):
    import_fhir_bundle(source=source, path=COLLECTION, dry_run=False)
    data = json.loads(COLLECTION.read_text())
    maria = data["entry"][1]["resource"]
    maria["telecom"][0]["value"] = "(512) 555-0199"
    data["entry"][3]["resource"]["start"] = "2026-11-03T10:30:00-06:00"
    data["entry"][3]["resource"]["end"] = "2026-11-03T11:15:00-06:00"
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(data))
    batch = import_fhir_bundle(source=source, path=changed, dry_run=False)
    assert (batch.counts["updated"], batch.counts["unchanged"]) == (1, 1)
    assert batch.counts["appointments_updated"] == 1
    assert Patient.objects.get(last_name="García López").mobile_phone == "+15125550199"
    assert Appointment.objects.get(external_id="A-77").start.day == 3


def test_a_transaction_bundle_resolves_urn_uuid_references(source):
    batch = import_fhir_bundle(source=source, path=TRANSACTION, dry_run=False)
    assert batch.counts["new"] == 1 and batch.counts["appointments_new"] == 1
    assert batch.counts["fhir_skipped"] == 1  # the DELETE: an import never deletes
    thi = Patient.objects.get(last_name="Nguyen")
    assert (thi.language, thi.mobile_phone) == ("vi", "+12105550133")
    visit = Appointment.objects.get(patient=thi)
    assert (visit.status, visit.external_id, visit.appointment_type.code) == (
        "no_show",
        "V-9001",
        "hygiene",
    )


def test_a_dry_run_writes_nothing(source):
    batch = import_fhir_bundle(source=source, path=COLLECTION, dry_run=True)
    assert batch.counts["new"] == 2 and batch.counts["appointments_new"] == 2
    assert batch.status == ImportBatch.Status.PREVIEW
    assert not Patient.objects.exists() and not Appointment.objects.exists()


def test_each_broken_entry_is_refused_with_its_reason_and_the_rest_imports(source):
    batch = import_fhir_bundle(source=source, path=BROKEN, dry_run=False)
    assert batch.counts == {
        "new": 1,
        "rejected": 1,
        "appointments_rejected": 5,
        "fhir_patients": 2,
        "fhir_appointments": 5,
        "fhir_skipped": 1,
        "warnings": 1,
    }
    reasons = {(r["line"], r["column"]): r["reason"] for r in batch.report["rejected"]}
    # A FHIR partial date, never read as the Excel serial number 1974.
    assert reasons[(2, "Patient.birthDate")] == "birth date “1974” is not a full date (YYYY-MM-DD)"
    assert reasons[(3, "Appointment.participant")] == (
        "its patient (Patient/nobody) is not a Patient in this bundle"
    )
    assert reasons[(4, "Appointment.start")] == (
        "“2027-02-01T09:00:00” is not an instant with an offset"
    )
    assert reasons[(5, "Appointment.serviceType")].startswith(
        "“Root canal” is not an appointment type"
    )
    assert reasons[(6, "Appointment.status")] == "“tentative” is not an Appointment status"
    assert reasons[(7, "Appointment.participant")] == "its patient (entry 2) was refused"
    assert Patient.objects.get().last_name == "Okafor"
    assert not Appointment.objects.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"resourceType,id\nPatient,1\n", "is not valid JSON"),
        (b"\xff\xfe{}", "is not UTF-8"),
        (b"[1, 2]", "not a FHIR resource"),
        (b'{"resourceType": "Patient", "id": "example"}', "is a single Patient resource"),
        (b'{"resourceType": "Bundle", "type": "document", "entry": []}', "of type “document”"),
        (b'{"resourceType": "Bundle", "type": "collection", "entry": {}}', "is not a list"),
        (
            b'{"resourceType": "Bundle", "type": "collection", "entry": '
            b'[{"resource": {"resourceType": "Observation"}}]}',
            "has no Patient or Appointment",
        ),
    ],
)
def test_a_file_that_is_not_a_usable_bundle_is_refused_before_writing(
    source, tmp_path, content, message
):
    path = tmp_path / "export.json"
    path.write_bytes(content)
    with pytest.raises(UnreadableFile, match=message):
        import_fhir_bundle(source=source, path=path, dry_run=False)
    assert not ImportBatch.objects.exists() and not Patient.objects.exists()


def test_the_command_prints_a_summary_and_exits_2_on_refusals(source, capsys):
    call_command("import_fhir", str(COLLECTION), source="Clinic EHR")
    out = capsys.readouterr().out
    assert "Imported bundle-collection.json from Clinic EHR: patients 2 new" in out
    assert "appointments 2 new" in out and "1 other resources skipped" in out
    with pytest.raises(SystemExit) as exit_:
        call_command("import_fhir", str(BROKEN), source="Clinic EHR", dry_run=True)
    assert exit_.value.code == 2
    assert "entry 3, Appointment.participant" in capsys.readouterr().err
