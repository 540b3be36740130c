"""Importing spreadsheets: matching, repeatable upsert, rejections with reasons."""

import datetime as dt
from pathlib import Path

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command

from imports.models import SourceRecallDate
from imports.readers import UnreadableFile
from imports.services import import_file
from patients.models import Appointment, ExternalIdentifier, Patient
from reminders.models import OutboundMessage
from tests.factories import (
    AppointmentTypeFactory,
    LocationFactory,
    PatientFactory,
)

DEMO = Path(__file__).resolve().parents[2] / "imports" / "demo"
SPREADSHEET = DEMO / "riverside-old-spreadsheet.csv"
SCHEDULER = DEMO / "riverside-scheduler-export.csv"


def write(tmp_path, text: str, name="file.csv", encoding="utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.django_db
def test_the_old_spreadsheet_imports_and_says_what_it_refused(source):
    batch = import_file(source=source, path=SPREADSHEET, dry_run=False)
    assert batch.counts["new"] == 7 and batch.counts["rejected"] == 1
    (rejected,) = batch.report["rejected"]
    assert rejected == {"line": 8, "column": "DOB", "reason": "date of birth is empty"}
    warnings = {(w["line"], w["column"]) for w in batch.report["warnings"]}
    assert warnings == {(9, "Cell"), (9, "Email")}
    raj = Patient.objects.get(last_name="Patel")
    assert (raj.mobile_phone, raj.email) == ("", "")  # reported and left empty, not guessed
    jose = Patient.objects.get(last_name="Núñez")
    assert (jose.first_name, jose.date_of_birth, jose.mobile_phone) == (
        "José",
        dt.date(1994, 10, 4),
        "+12105550185",
    )
    assert ExternalIdentifier.objects.get(patient=jose).value == "RD-1001"
    assert SourceRecallDate.objects.get(patient=jose).due_date == dt.date(2026, 12, 3)
    assert jose.followups.get().due_date == dt.date(2026, 12, 3)  # opened from "Next Recall"


@pytest.mark.django_db
def test_importing_the_same_file_twice_changes_nothing(source):
    import_file(source=source, path=SPREADSHEET, dry_run=False)
    entries, patients = LogEntry.objects.count(), Patient.objects.count()
    again = import_file(source=source, path=SPREADSHEET, dry_run=False)
    assert again.counts == {"unchanged": 7, "rejected": 1, "warnings": 2}
    assert Patient.objects.count() == patients
    assert LogEntry.objects.count() == entries + 1  # only the batch's own entry


@pytest.mark.django_db
def test_a_changed_phone_updates_one_patient(source, tmp_path):
    import_file(source=source, path=SPREADSHEET, dry_run=False)
    changed = SPREADSHEET.read_text().replace("512-555-0133", "512-555-0144")
    batch = import_file(source=source, path=write(tmp_path, changed), dry_run=False)
    assert batch.counts["updated"] == 1 and batch.counts["unchanged"] == 6
    assert batch.report["changes"][0]["changes"] == {
        "mobile_phone": ["+15125550133", "+15125550144"]
    }
    assert Patient.objects.get(last_name="Okafor").mobile_phone == "+15125550144"


@pytest.mark.django_db
def test_a_changed_next_recall_moves_the_kept_date_only(source, tmp_path):
    import_file(source=source, path=SPREADSHEET, dry_run=False)
    jose = Patient.objects.get(last_name="Núñez")
    before = {r.patient_id: r.due_date for r in SourceRecallDate.objects.all()}
    changed = SPREADSHEET.read_text().replace("Austin,12/03/2026", "Austin,01/15/2027")
    import_file(source=source, path=write(tmp_path, changed), dry_run=False)
    after = {r.patient_id: r.due_date for r in SourceRecallDate.objects.all()}
    assert after == before | {jose.pk: dt.date(2027, 1, 15)}
    # The follow-up opened from the first date is PracticeCRM's own now: the
    # reconciliation report shows the difference rather than the import moving it.
    assert jose.followups.get().due_date == dt.date(2026, 12, 3)


@pytest.mark.django_db
def test_a_dry_run_writes_nothing(source):
    batch = import_file(source=source, path=SPREADSHEET, dry_run=True)
    assert batch.counts["new"] == 7
    assert not Patient.objects.exists() and not SourceRecallDate.objects.exists()


@pytest.mark.django_db
def test_the_scheduler_export_matches_by_the_sources_ids_and_moves_appointments(
    source, austin, tmp_path
):
    for code, name in [
        ("hygiene-cleaning", "Hygiene cleaning"),
        ("periodic-exam", "Periodic exam"),
    ]:
        AppointmentTypeFactory(code=code, name=name)
    import_file(source=source, path=SPREADSHEET, dry_run=False)
    batch = import_file(source=source, path=SCHEDULER, dry_run=False)
    assert batch.counts["unchanged"] == 4  # the people are the spreadsheet's
    assert batch.counts["appointments_new"] == 4
    assert batch.counts["rejected"] == 1  # "Root canal therapy" is not a type
    assert "not an appointment type" in batch.report["rejected"][0]["reason"]
    visit = Appointment.objects.get(external_id="A-5003")
    assert visit.start.astimezone(austin.tz).time() == dt.time(14, 0)
    moved = SCHEDULER.read_text().replace(
        "2026-12-10;2:00 PM;3:00 PM", "2026-12-11;2:00 PM;3:00 PM"
    )
    again = import_file(source=source, path=write(tmp_path, moved), dry_run=False)
    assert again.counts["appointments_updated"] == 1
    assert again.counts["appointments_unchanged"] == 3
    visit.refresh_from_db()
    assert visit.start.astimezone(austin.tz).date() == dt.date(2026, 12, 11)
    # Its reminders moved with it (planned through the same signals as staff edits).
    two_hours = OutboundMessage.objects.get(appointment=visit, step="120m:sms")
    assert two_hours.scheduled_for == visit.start - dt.timedelta(hours=2)


@pytest.mark.django_db
def test_a_look_alike_is_imported_and_listed_for_a_person_to_merge(source, austin, tmp_path):
    PatientFactory(
        home_location=austin,
        first_name="Jose",
        last_name="Nunes",
        date_of_birth=dt.date(1994, 10, 4),
        mobile_phone="+12105550185",
    )
    batch = import_file(source=source, path=SPREADSHEET, dry_run=False)
    assert batch.counts["duplicate_suspect"] == 1
    (suspect,) = batch.report["suspects"]
    assert suspect["name"] == "José Núñez" and suspect["resembles"][0]["name"] == "Jose Nunes"
    assert Patient.objects.filter(date_of_birth=dt.date(1994, 10, 4)).count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"%PDF-1.4 binary", "not a text table"),
        (b"just one line of prose without columns\n", "does not look like a table"),
        (b"A,B\n1,2\n", "No column is mapped"),
        (b"First Name,Last Name\nAna,Lopez\n", "Map the date of birth"),
    ],
)
def test_unusable_files_are_refused_before_anything_is_written(source, tmp_path, content, message):
    path = tmp_path / "upload.csv"
    path.write_bytes(content)
    with pytest.raises(UnreadableFile, match=message):
        import_file(source=source, path=path, dry_run=False)
    assert not Patient.objects.exists()


@pytest.mark.django_db
def test_windows_1252_semicolons_and_a_bom_are_read(source, tmp_path):
    text = "Nom;Prénom;DOB\nMüller;Zoë;1970-01-02\n".replace("Nom", "Last Name").replace(
        "Prénom", "First Name"
    )
    import_file(source=source, path=write(tmp_path, text, encoding="cp1252"), dry_run=False)
    bom = write(tmp_path, "\ufeffFirst Name,Last Name,DOB\nAna,Lopez,03/04/1980\n", "b.csv")
    import_file(source=source, path=bom, dry_run=False)
    assert Patient.objects.get(last_name="Müller").first_name == "Zoë"
    assert Patient.objects.get(last_name="Lopez").date_of_birth == dt.date(1980, 3, 4)


@pytest.mark.django_db
def test_the_command_prints_a_summary_and_exits_2_when_rows_were_rejected(austin, capsys):
    with pytest.raises(SystemExit) as exited:
        call_command(
            "import_file",
            str(SPREADSHEET),
            "--source",
            "Old spreadsheet",
            "--location",
            austin.slug,
        )
    assert exited.value.code == 2
    out = capsys.readouterr()
    assert "Imported riverside-old-spreadsheet.csv from Old spreadsheet: 7 new" in out.out
    assert "line 8, DOB: date of birth is empty" in out.err


@pytest.mark.django_db
def test_from_the_web_rows_reach_only_what_the_importer_may_change(source, austin, tmp_path):
    from locations.models import Role
    from tests.factories import staff

    denver = LocationFactory(name="Hillcrest Dental — Denver", slug="denver", city="Denver")
    theirs = PatientFactory(
        home_location=denver,
        first_name="Amara",
        last_name="Okafor",
        date_of_birth=dt.date(1987, 2, 17),
        mobile_phone="+15125550100",
    )
    ExternalIdentifier.objects.create(patient=theirs, system="old-spreadsheet", value="RD-1002")
    manager = staff(Role.PRACTICE_MANAGER, austin, username="austin-manager")
    batch = import_file(source=source, path=SPREADSHEET, dry_run=False, by=manager)
    reasons = {r["line"]: r["reason"] for r in batch.report["rejected"]}
    assert "another location" in reasons[3]  # RD-1002 is Denver's patient
    theirs.refresh_from_db()
    assert theirs.mobile_phone == "+15125550100"  # untouched
    moved = SPREADSHEET.read_text().replace(",Austin,06/01/2026", ",Denver,06/01/2026")
    batch = import_file(source=source, path=write(tmp_path, moved), dry_run=True, by=manager)
    reasons = {r["line"]: r["reason"] for r in batch.report["rejected"]}
    assert reasons[6].startswith("“Denver” is not one of the locations")


@pytest.mark.django_db
def test_a_patient_found_by_name_and_birth_date_keeps_the_sources_id(source, austin):
    jose = PatientFactory(
        home_location=austin,
        first_name="José",
        last_name="Núñez",
        date_of_birth=dt.date(1994, 10, 4),
        mobile_phone="+12105550185",
        email="nunez.jose@example.net",
    )
    first = import_file(source=source, path=SPREADSHEET, dry_run=False)
    assert first.counts["updated"] == 1 and first.counts["new"] == 6
    assert first.report["changes"][0]["changes"] == {"id in Old spreadsheet": ["", "RD-1001"]}
    assert ExternalIdentifier.objects.get(patient=jose, system="old-spreadsheet").value == "RD-1001"
    again = import_file(source=source, path=SPREADSHEET, dry_run=False)
    assert again.counts["unchanged"] == 7


@pytest.mark.django_db
def test_a_calendar_export_adds_visits_to_people_found_by_name(source, austin):
    for code, name in [
        ("hygiene-cleaning", "Hygiene cleaning"),
        ("periodic-exam", "Periodic exam"),
    ]:
        AppointmentTypeFactory(code=code, name=name)
    import_file(source=source, path=SPREADSHEET, dry_run=False)
    patients = Patient.objects.count()
    batch = import_file(source=source, path=DEMO / "google-calendar-export.csv", dry_run=False)
    assert batch.counts["appointments_new"] == 2
    assert Patient.objects.count() == patients  # never creates anyone from a calendar
    reasons = {r["line"]: r["reason"] for r in batch.report["rejected"]}
    assert reasons[4].startswith("no patient named “Pat Nobody” at Riverside Dental — Austin")
    assert reasons[5] == "the appointment has no type"
    jose = Patient.objects.get(last_name="Núñez")
    visit = jose.appointments.get()
    assert visit.start.astimezone(austin.tz) == dt.datetime(2026, 12, 15, 9, 0, tzinfo=austin.tz)
    again = import_file(source=source, path=DEMO / "google-calendar-export.csv", dry_run=False)
    assert again.counts["appointments_unchanged"] == 2


@pytest.mark.django_db
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_growing_import_refreshes_the_planners_statistics(source, monkeypatch, dry_run):
    """ANALYZE at 2, 4, 8… rows here (5,000, 10,000, … in real life), in the dry
    run's transaction as well as between the import's chunks."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from imports import engine

    monkeypatch.setattr(engine, "CHUNK", 2)
    monkeypatch.setattr(engine, "ANALYZE_FIRST", 2)
    with CaptureQueriesContext(connection) as captured:
        batch = import_file(source=source, path=SPREADSHEET, dry_run=dry_run)
    assert batch.counts["new"] == 7
    analyzed = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("ANALYZE")]
    assert len(analyzed) == 3  # after rows 2, 4 and 8 (8 rows in the file)
    assert '"patients_patient"' in analyzed[0]
