"""Every reason the importer refuses a row or a whole file (issue #5).

The files are small, in the shapes real tools write: a dental office's spreadsheet
("Patient Name" as "Last, First", a "Cell" column, dates as 02/17/1987), a
scheduler export (semicolons, Appt Date / Start Time / Appt Type / Status) and a
Google Calendar export (no birth dates). A broken row sits between two good ones:
the report names its line, column and reason, nothing of it is written, and the
good rows are.
"""

import datetime as dt
import io
import zipfile
from pathlib import Path

import openpyxl
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from followups.models import Followup
from imports import uploads
from imports.fhir import read_bundle
from imports.models import ImportBatch, ImportUpload, SourceRecallDate
from imports.readers import UnreadableFile
from imports.services import import_file
from locations.models import Role
from patients.models import Appointment, ExternalIdentifier, Patient
from tests.factories import AppointmentTypeFactory, LocationFactory, PatientFactory, staff

pytestmark = pytest.mark.django_db

DENTAL = "Chart #,Patient Name,DOB,Cell,Email,Office,Next Recall"
DENTAL_JOSE = 'RD-1001,"Núñez, José",10/04/1994,(210) 555-0185,jose@example.net,Austin,12/03/2026'
DENTAL_AMARA = 'RD-1002,"Okafor, Amara",02/17/1987,512-555-0133,amara@example.com,Austin,01/15/2027'
DENTAL_SOFIA = 'RD-1003,"Lindqvist, Sofia",07/30/1979,,sofia@example.org,Austin,11/20/2026'

SCHEDULER = (
    "Appt ID;Patient ID;First Name;Last Name;Birth Date;"
    "Appt Date;Start Time;End Time;Appt Type;Status"
)
SCHEDULER_JOSE = (
    "A-5001;RD-1001;José;Núñez;1994-10-04;2026-12-03;10:00;11:00;Hygiene cleaning;Scheduled"
)
SCHEDULER_SOFIA = (
    "A-5003;RD-1003;Sofia;Lindqvist;1979-07-30;2026-12-10;2:00 PM;3:00 PM;Hygiene cleaning;Booked"
)

CALENDAR = "Subject,Start Date,Start Time,End Date,End Time,All Day Event,Description,Location"


def write(tmp_path: Path, text: str, name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def dental(bad_row: str) -> str:
    return "\n".join([DENTAL, DENTAL_JOSE, bad_row, DENTAL_SOFIA]) + "\n"


def scheduler(bad_row: str) -> str:
    return "\n".join([SCHEDULER, SCHEDULER_JOSE, bad_row, SCHEDULER_SOFIA]) + "\n"


def reported(batch: ImportBatch, kind: str = "rejected") -> list[tuple[int, str, str]]:
    return [(r["line"], r["column"], r["reason"]) for r in batch.report[kind]]


def assert_only_the_good_rows_were_written(batch: ImportBatch) -> None:
    """José (line 2) and Sofia (line 4) went in; nothing of line 3 (Amara) did."""
    assert batch.counts["new"] == 2 and batch.counts["rejected"] == 1
    assert set(Patient.objects.values_list("last_name", flat=True)) == {"Núñez", "Lindqvist"}
    assert set(ExternalIdentifier.objects.values_list("value", flat=True)) == {
        "RD-1001",
        "RD-1003",
    }


@pytest.fixture
def visit_types(db):
    return [
        AppointmentTypeFactory(code="hygiene-cleaning", name="Hygiene cleaning"),
        AppointmentTypeFactory(code="periodic-exam", name="Periodic exam"),
    ]


# --- a patient row the importer cannot read --------------------------------------------

A_DATE = "(use 2026-03-01 or 03/01/2026)"


@pytest.mark.parametrize(
    ("row", "reasons"),
    [
        pytest.param(
            "RD-1002,Madonna,02/17/1987,512-555-0133,,Austin,01/15/2027",
            [("Patient Name", "“Madonna” has no last name")],
            id="one-word name",
        ),
        pytest.param(
            'RD-1002,"Okafor,",02/17/1987,512-555-0133,,Austin,01/15/2027',
            [("Patient Name", "“Okafor,” needs both a first and a last name")],
            id="last name and a comma",
        ),
        pytest.param(
            "RD-1002,,02/17/1987,512-555-0133,,Austin,01/15/2027",
            [("Patient Name", "no first name"), ("Patient Name", "no last name")],
            id="no name",
        ),
        pytest.param(
            'RD-1002,"Okafor, Amara",,512-555-0133,,Austin,01/15/2027',
            [("DOB", "date of birth is empty")],
            id="no date of birth",
        ),
        pytest.param(
            'RD-1002,"Okafor, Amara",17/02/1987,512-555-0133,,Austin,01/15/2027',
            [("DOB", f"date of birth “17/02/1987” is not a date {A_DATE}")],
            id="day first in a month-first practice",
        ),
        pytest.param(
            'RD-1002,"Okafor, Amara",unknown,512-555-0133,,Austin,01/15/2027',
            [("DOB", f"date of birth “unknown” is not a date {A_DATE}")],
            id="words for a date of birth",
        ),
        pytest.param(
            'RD-1002,"Okafor, Amara",02/17/1887,512-555-0133,,Austin,01/15/2027',
            [("DOB", "date of birth “02/17/1887” is before 1900")],
            id="born before 1900",
        ),
        pytest.param(
            'RD-1002,"Okafor, Amara",02/17/2987,512-555-0133,,Austin,01/15/2027',
            [("DOB", "“02/17/2987” is in the future")],
            id="born in the future",
        ),
        pytest.param(
            'RD-1002,"Okafor, Amara",02/17/1987,512-555-0133,,Dallas,01/15/2027',
            [("Office", "“Dallas” is not one of the locations (Riverside Dental — Austin)")],
            id="unknown office",
        ),
        pytest.param(
            'RD-1002,"Okafor, Amara",02/17/1987,512-555-0133,,Austin,ASAP',
            [("Next Recall", f"next recall “ASAP” is not a date {A_DATE}")],
            id="unreadable next recall",
        ),
    ],
)
def test_a_patient_row_it_cannot_read_is_refused_and_the_rest_imports(
    source, tmp_path, row, reasons
):
    batch = import_file(source=source, path=write(tmp_path, dental(row)), dry_run=False)
    assert reported(batch) == [(3, column, reason) for column, reason in reasons]
    assert_only_the_good_rows_were_written(batch)
    # Its next recall neither: no kept date, no follow-up opened.
    assert SourceRecallDate.objects.count() == Followup.objects.count() == 2


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        ("RD-1002,,Okafor,02/17/1987", "First Name", "no first name"),
        ("RD-1002,Amara,,02/17/1987", "Last Name", "no last name"),
    ],
)
def test_a_missing_first_or_last_name_is_refused_in_its_own_column(
    source, tmp_path, row, column, reason
):
    text = "\n".join(
        [
            "Patient ID,First Name,Last Name,Birth Date",
            "RD-1001,José,Núñez,10/04/1994",
            row,
            "RD-1003,Sofia,Lindqvist,07/30/1979",
        ]
    )
    batch = import_file(source=source, path=write(tmp_path, text), dry_run=False)
    assert reported(batch) == [(3, column, reason)]
    assert_only_the_good_rows_were_written(batch)


# --- an appointment row the importer cannot read -----------------------------------------


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        pytest.param(
            "A-5002;RD-1002;Amara;Okafor;1987-02-17;2026-11-31;09:30 AM;10:15 AM;Periodic exam;",
            "Appt Date",
            f"appointment “2026-11-31” is not a date {A_DATE}",
            id="no such day",
        ),
        pytest.param(
            "A-5002;RD-1002;Amara;Okafor;1987-02-17;TBD;09:30 AM;10:15 AM;Periodic exam;",
            "Appt Date",
            f"appointment “TBD” is not a date {A_DATE}",
            id="date to be decided",
        ),
        pytest.param(
            "A-5002;RD-1002;Amara;Okafor;1987-02-17;2026-11-02;9:75 AM;10:15 AM;Periodic exam;",
            "Start Time",
            "appointment “9:75 AM” is not a time (use 09:30 or 9:30 AM)",
            id="unreadable time",
        ),
        pytest.param(
            "A-5002;RD-1002;Amara;Okafor;1987-02-17;2026-11-02;;;Periodic exam;",
            "Start Time",
            "the appointment has no time",
            id="no time",
        ),
        pytest.param(
            "A-5002;RD-1002;Amara;Okafor;1987-02-17;2026-03-08;2:30 AM;3:15 AM;Periodic exam;",
            "Start Time",
            "02:30 does not exist on 2026-03-08 in America/Chicago",
            id="in the spring-forward gap",
        ),
        pytest.param(
            "A-5002;RD-1002;Amara;Okafor;1987-02-17;2026-11-02;09:30 AM;10:15 AM;Root canal;",
            "Appt Type",
            "“Root canal” is not an appointment type (Hygiene cleaning, Periodic exam)",
            id="unknown type",
        ),
        pytest.param(
            "A-5002;RD-1002;Amara;Okafor;1987-02-17;2026-11-02;09:30 AM;10:15 AM;;",
            "Appt Type",
            "the appointment has no type",
            id="no type",
        ),
        pytest.param(
            "A-5002;RD-1002;Amara;Okafor;1987-02-17;2026-11-02;09:30 AM;10:75 AM;Periodic exam;",
            "End Time",
            "end “10:75 AM” is not a time (use 09:30 or 9:30 AM)",
            id="unreadable end",
        ),
        pytest.param(
            "A-5002;RD-1002;Amara;Okafor;1987-02-17;2026-11-02;09:30 AM;09:00 AM;Periodic exam;",
            "End Time",
            "the appointment ends before it starts",
            id="ends before it starts",
        ),
        pytest.param(
            "A-5002;RD-1002;Amara;Okafor;1987-02-17;2026-11-02;09:30 AM;09:30 AM;Periodic exam;",
            "End Time",
            "the appointment ends before it starts",
            id="ends as it starts",
        ),
        pytest.param(
            "A-5002;RD-1002;Amara;Okafor;1987-02-17;2026-11-02;09:30 AM;10:15 AM;Periodic exam;"
            "Tentative",
            "Status",
            "“Tentative” is not a status we know",
            id="unknown status",
        ),
    ],
)
def test_an_appointment_it_cannot_read_refuses_its_row_and_the_rest_imports(
    source, visit_types, tmp_path, row, column, reason
):
    batch = import_file(source=source, path=write(tmp_path, scheduler(row)), dry_run=False)
    assert reported(batch) == [(3, column, reason)]
    assert_only_the_good_rows_were_written(batch)
    assert batch.counts["appointments_new"] == 2
    assert set(Appointment.objects.values_list("external_id", flat=True)) == {"A-5001", "A-5003"}


def test_an_appointment_id_of_another_patient_is_refused_and_the_visit_left_alone(
    source, austin, visit_types, tmp_path
):
    # The old scheduler reused a deleted visit's id for Amara's new one.
    amara = "A-5001;RD-1002;Amara;Okafor;1987-02-17;2026-11-02;09:30 AM;10:15 AM;Periodic exam;"
    batch = import_file(source=source, path=write(tmp_path, scheduler(amara)), dry_run=False)
    assert reported(batch) == [(3, "Appt ID", "appointment “A-5001” belongs to another patient")]
    # The row's patient is readable and goes in; only its visit is refused.
    assert batch.counts["new"] == 3 and batch.counts["appointments_rejected"] == 1
    assert not Patient.objects.get(last_name="Okafor").appointments.exists()
    visit = Appointment.objects.get(external_id="A-5001")
    assert visit.patient.last_name == "Núñez"
    assert visit.start == dt.datetime(2026, 12, 3, 10, 0, tzinfo=austin.tz)


def test_an_appointment_the_model_refuses_is_reported_and_not_written(
    source, visit_types, tmp_path
):
    # A type set up with no length, and an export with no end time: it would end as it starts.
    AppointmentTypeFactory(code="emergency", name="Emergency", default_duration_minutes=0)
    text = "\n".join(
        [
            "Appt ID;Patient ID;First Name;Last Name;Birth Date;Appt Date;Start Time;Appt Type",
            "A-5001;RD-1001;José;Núñez;1994-10-04;2026-12-03;10:00;Hygiene cleaning",
            "A-5002;RD-1002;Amara;Okafor;1987-02-17;2026-11-02;09:30 AM;Emergency",
        ]
    )
    batch = import_file(source=source, path=write(tmp_path, text), dry_run=False)
    assert reported(batch) == [
        (3, "Appt Date", "Constraint “appointment_ends_after_start” is violated.")
    ]
    assert batch.counts["appointments_rejected"] == 1 and batch.counts["appointments_new"] == 1
    assert list(Appointment.objects.values_list("external_id", flat=True)) == ["A-5001"]


# --- a row that reaches beyond the importing user ------------------------------------------


def test_from_the_web_a_source_id_of_another_locations_patient_is_refused(source, austin, tmp_path):
    denver = LocationFactory(name="Hillcrest Dental — Denver", slug="denver", city="Denver")
    theirs = PatientFactory(
        home_location=denver,
        first_name="Amara",
        last_name="Okafor",
        date_of_birth=dt.date(1987, 2, 17),
        mobile_phone="+13035550100",
        email="amara@denver.example",
    )
    ExternalIdentifier.objects.create(patient=theirs, system=source.system, value="RD-1002")
    manager = staff(Role.PRACTICE_MANAGER, austin, username="austin-manager")
    path = write(tmp_path, dental(DENTAL_AMARA))
    batch = import_file(source=source, path=path, dry_run=False, by=manager)
    assert reported(batch) == [
        (3, "Chart #", "“RD-1002” is a patient you cannot change here (another location)")
    ]
    assert batch.counts["new"] == 2 and batch.counts["rejected"] == 1
    theirs.refresh_from_db()
    assert (theirs.mobile_phone, theirs.email) == ("+13035550100", "amara@denver.example")
    assert Patient.objects.filter(last_name="Okafor").get() == theirs
    assert not SourceRecallDate.objects.filter(patient=theirs).exists()
    assert not theirs.followups.exists()


# --- a calendar export (no birth dates): visits for people found by name --------------------


def test_a_calendar_row_naming_nobody_or_two_people_is_refused(
    source, austin, visit_types, tmp_path
):
    jose = PatientFactory(home_location=austin, first_name="José", last_name="Núñez")
    for born in (dt.date(1987, 2, 17), dt.date(1961, 5, 30)):  # mother and daughter
        PatientFactory(
            home_location=austin, first_name="Amara", last_name="Okafor", date_of_birth=born
        )
    at = "Riverside Dental — Austin"
    text = "\n".join(
        [
            CALENDAR,
            f"José Núñez,12/15/2026,9:00 AM,12/15/2026,10:00 AM,False,Hygiene cleaning,{at}",
            f"Pat Nobody,12/16/2026,3:00 PM,12/16/2026,3:30 PM,False,Periodic exam,{at}",
            f"Amara Okafor,12/16/2026,2:30 PM,12/16/2026,3:00 PM,False,Periodic exam,{at}",
        ]
    )
    batch = import_file(source=source, path=write(tmp_path, text), dry_run=False)
    assert reported(batch) == [
        (
            3,
            "Subject",
            f"no patient named “Pat Nobody” at {at}; add them first, "
            "or import a file with dates of birth",
        ),
        (
            4,
            "Subject",
            f"2 patients are named “Amara Okafor” at {at}; a date-of-birth column tells them apart",
        ),
    ]
    assert batch.counts["rejected"] == 2 and batch.counts["appointments_new"] == 1
    assert Patient.objects.count() == 3  # a calendar never adds anyone
    assert Appointment.objects.get().patient == jose


# --- warnings: the row goes in, the bad cell does not ---------------------------------------

CONTACT = "Chart #,Patient Name,DOB,Cell,Home Phone,Email,Address,City,State,ZIP,Language,Goes By"
CONTACT_GOOD = (
    'RD-1001,"Núñez, José",10/04/1994,(210) 555-0185,,jose@example.net,'
    "12 Oak St,Austin,TX,78701,Spanish,Pepe"
)
CONTACT_AMARA = {
    "Cell": "512-555-0133",
    "Home Phone": "512-555-0134",
    "Email": "amara@example.com",
    "Address": "400 Congress Ave",
    "City": "Austin",
    "State": "TX",
    "ZIP": "78701",
    "Language": "English",
    "Goes By": "Mara",
}


@pytest.mark.parametrize(
    ("column", "value", "field", "reason"),
    [
        (
            "Cell",
            "12345",
            "mobile_phone",
            "“12345” is not a valid phone number: it has too few digits; left empty",
        ),
        (
            "Home Phone",
            "555-0134",
            "home_phone",
            "“555-0134” is not a valid phone number: it lacks an area code; left empty",
        ),
        (
            "Email",
            "amara@example",
            "email",
            "“amara@example” is not an email address; left empty",
        ),
        (
            "Address",
            "400 Congress Ave " * 12,
            "address_line1",
            "is longer than 200 characters; left as it was",
        ),
        ("City", "Austin " * 15, "city", "is longer than 100 characters; left as it was"),
        ("State", "Texas " * 17, "region", "is longer than 100 characters; left as it was"),
        (
            "ZIP",
            "78701-1234 (billing office)",
            "postal_code",
            "is longer than 20 characters; left as it was",
        ),
        (
            "Goes By",
            "Mara " * 21,
            "preferred_name",
            "is longer than 100 characters; left as it was",
        ),
    ],
)
def test_a_cell_it_cannot_use_is_left_empty_with_a_warning_and_the_row_imports(
    source, tmp_path, column, value, field, reason
):
    cells = {**CONTACT_AMARA, column: value}
    amara = 'RD-1002,"Okafor, Amara",02/17/1987,' + ",".join(
        f'"{cells[c]}"' for c in CONTACT.split(",")[3:]
    )
    text = "\n".join([CONTACT, CONTACT_GOOD, amara]) + "\n"
    batch = import_file(source=source, path=write(tmp_path, text), dry_run=False)
    assert reported(batch, "warnings") == [(3, column, reason)]
    assert batch.counts["new"] == 2 and batch.counts["warnings"] == 1
    assert "rejected" not in batch.counts
    assert getattr(Patient.objects.get(last_name="Okafor"), field) == ""


def test_an_unknown_language_or_too_long_cell_leaves_the_value_on_file(source, tmp_path):
    row = 'RD-1002,"Okafor, Amara",02/17/1987,,,,,{city},,,{language},'
    first = "\n".join([CONTACT, row.format(city="Austin", language="Spanish")])
    import_file(source=source, path=write(tmp_path, first), dry_run=False)
    again = "\n".join([CONTACT, row.format(city="Austin " * 15, language="Klingon")])
    batch = import_file(source=source, path=write(tmp_path, again, "again.csv"), dry_run=False)
    assert reported(batch, "warnings") == [
        (2, "City", "is longer than 100 characters; left as it was"),
        (2, "Language", "“Klingon” is not a language we send in; left as it was"),
    ]
    assert batch.counts["unchanged"] == 1
    amara = Patient.objects.get()
    assert (amara.city, amara.language) == ("Austin", "es")


# --- a file that is not a usable table: nothing is written -----------------------------------

OLD_XLS = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
UTF16_TEXT = "First Name\tLast Name\tDOB\r\nAna\tLopez\t03/04/1980\r\n".encode("utf-16")
NOT_A_TEXT_TABLE = (
    "“export.csv” is not a text table (CSV) or an Excel .xlsx file. "
    "In your spreadsheet, use File → Save as → CSV or Excel Workbook (.xlsx)."
)
NOT_AN_ENCODING = (
    "“export.csv” has characters that are neither UTF-8 nor Windows-1252. "
    "Save it again as “CSV UTF-8”."
)


def xlsx(*rows: list) -> bytes:
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def zipped(**files: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return out.getvalue()


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        pytest.param(b"\xef\xbb\xbf", "export.csv", "“export.csv” has no rows.", id="only a BOM"),
        pytest.param(OLD_XLS, "export.csv", NOT_A_TEXT_TABLE, id="old .xls renamed"),
        pytest.param(PNG, "export.csv", NOT_A_TEXT_TABLE, id="a picture"),
        pytest.param(UTF16_TEXT, "export.csv", NOT_A_TEXT_TABLE, id="Excel unicode text"),
        pytest.param(
            b"Last Name,First Name,DOB\nM\x81ller,Zo\xeb,1970-01-02\n",
            "export.csv",
            NOT_AN_ENCODING,
            id="not Windows-1252",
        ),
        pytest.param(
            b"\xef\xbb\xbfLast Name,First Name,DOB\nM\xfcller,Zo\xeb,1970-01-02\n",
            "export.csv",
            NOT_AN_ENCODING,
            id="a UTF-8 BOM on Windows-1252",
        ),
        pytest.param(
            b'"Chart #,Patient Name,DOB\n' + b"RD-1001,Jose Nunez,10/04/1994\n" * 5000,
            "export.csv",
            "“export.csv” is not a readable CSV table: field larger than field limit (131072).",
            id="unclosed quote in the header",
        ),
        pytest.param(
            zipped(**{"patients.csv": "First Name,Last Name\n"}),
            "export.xlsx",
            "“export.xlsx” is not an Excel .xlsx workbook we can read.",
            id="a zip of CSVs",
        ),
        pytest.param(
            xlsx(), "export.xlsx", "The first sheet of “export.xlsx” is empty.", id="empty"
        ),
        pytest.param(
            xlsx(["Patients 2026"], ["First Name", "Last Name", "DOB"]),
            "export.xlsx",
            "The first row of “export.xlsx”'s first sheet should name the columns "
            "(e.g. First Name, Last Name, DOB).",
            id="a title above the headers",
        ),
    ],
)
def test_a_file_that_is_not_a_table_is_refused_and_nothing_written(
    source, tmp_path, content, name, message
):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableFile) as refused:
        import_file(source=source, path=path, dry_run=False)
    assert str(refused.value) == message
    assert not ImportBatch.objects.exists() and not Patient.objects.exists()


def test_a_file_over_the_size_limit_is_refused(source, tmp_path, settings):
    settings.IMPORT_MAX_BYTES = 1_000_000
    rows = "".join(f"RD-{n},Patient {n},01/01/1980\n" for n in range(60_000))
    path = write(tmp_path, "Chart #,Patient Name,DOB\n" + rows)
    with pytest.raises(UnreadableFile) as refused:
        import_file(source=source, path=path, dry_run=False)
    assert str(refused.value) == (
        "“export.csv” is 2.0 MB; the limit is 1 MB. "
        "Split it, or ask your administrator to raise IMPORT_MAX_BYTES."
    )
    assert not ImportBatch.objects.exists() and not Patient.objects.exists()


def test_a_broken_quote_deep_in_the_file_refuses_it_in_the_dry_run(source, tmp_path):
    # One cell opens a quote that never closes: the rest of the file is one cell.
    good = "".join(f"RD-{n},Patient {n},01/01/1980\n" for n in range(1000, 7000))
    text = 'Chart #,Patient Name,DOB\nRD-1,"Okafor, Amara,02/17/1987\n' + good
    with pytest.raises(UnreadableFile) as refused:
        import_file(source=source, path=write(tmp_path, text), dry_run=True)
    assert str(refused.value) == (
        "“export.csv” is not a readable CSV table from line 2: "
        "field larger than field limit (131072)."
    )
    assert not Patient.objects.exists()


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            {"Chart #": "external_id", "Given": "first_name", "DOB": "date_of_birth"},
            "Map a full-name column, or both first and last name.",
        ),
        (
            {
                "Given": "first_name",
                "Family": "last_name",
                "DOB": "date_of_birth",
                "At": "appointment_time",
            },
            "An appointment time needs an appointment date column.",
        ),
    ],
)
def test_a_mapping_that_cannot_import_is_refused(source, tmp_path, mapping, message):
    text = "Chart #,Given,Family,DOB,At\nRD-1001,José,Núñez,10/04/1994,10:00\n"
    with pytest.raises(UnreadableFile) as refused:
        import_file(source=source, path=write(tmp_path, text), mapping=mapping, dry_run=False)
    assert str(refused.value) == message
    assert not ImportBatch.objects.exists() and not Patient.objects.exists()


# --- the upload pages and the background import ------------------------------------------------


@pytest.fixture
def manager(austin):
    return staff(Role.PRACTICE_MANAGER, austin, username="austin-manager")


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def test_the_mapping_page_says_when_no_column_is_usable(client, manager, source):
    client.force_login(manager)
    french = "Nom;Prénom;Naissance\nNúñez;José;04/10/1994\n".encode()
    response = client.post(
        reverse("imports:upload"),
        {"source": source.pk, "file": SimpleUploadedFile("patients.csv", french)},
    )
    upload = ImportUpload.objects.get()
    assert response["Location"] == reverse("imports:mapping", args=[upload.pk])
    page = client.get(reverse("imports:mapping", args=[upload.pk]))
    assert page.context["problems"] == ["No column is mapped to anything PracticeCRM holds."]
    body = {f"col_{i}": "" for i in range(3)}
    again = client.post(reverse("imports:mapping", args=[upload.pk]), body)
    assert again.status_code == 200 and not ImportBatch.objects.exists()


def test_an_excel_workbook_uploaded_from_the_web_is_read(client, manager, source):
    # The upload is kept under a name with no extension; the workbook must still open.
    client.force_login(manager)
    workbook = xlsx(["Chart #", "Patient Name", "DOB"], ["RD-1001", "Núñez, José", "10/04/1994"])
    response = client.post(
        reverse("imports:upload"),
        {"source": source.pk, "file": SimpleUploadedFile("patients.xlsx", workbook)},
    )
    upload = ImportUpload.objects.get()
    assert response["Location"] == reverse("imports:mapping", args=[upload.pk])
    assert upload.headers == ["Chart #", "Patient Name", "DOB"]
    batch = uploads.upload_preview(upload=upload, mapping=upload.mapping, by=manager)
    assert batch.counts == {"new": 1}


def test_a_file_gone_before_the_background_import_fails_it_with_a_reason(manager, source):
    file = SimpleUploadedFile("patients.csv", dental(DENTAL_AMARA).encode())
    upload = uploads.upload_store(source=source, file=file, by=manager)
    uploads.upload_preview(upload=upload, mapping=upload.mapping, by=manager)
    upload.path.unlink()
    assert uploads.upload_import(upload_id=str(upload.pk)) is None
    upload.refresh_from_db()
    assert upload.error == "The file is gone."
    assert not Patient.objects.exists()


# --- FHIR bundles: the refusals test_fhir.py does not show ------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"id": "export-1", "entry": []}',
            "“export.json” is JSON but not a FHIR resource (no resourceType).",
        ),
        (
            b'{"resourceType": 7, "type": "collection"}',
            "“export.json” is JSON but not a FHIR resource (no resourceType).",
        ),
    ],
)
def test_json_that_is_not_a_fhir_resource_is_refused(tmp_path, content, message):
    path = tmp_path / "export.json"
    path.write_bytes(content)
    with pytest.raises(UnreadableFile) as refused:
        read_bundle(path)
    assert str(refused.value) == message


def test_a_bundle_over_the_size_limit_is_refused(tmp_path, settings):
    settings.IMPORT_MAX_BYTES = 1_000_000
    path = tmp_path / "export.json"
    path.write_bytes(
        b'{"resourceType": "Bundle", "type": "collection", "entry": []}' + b" " * 1_200_000
    )
    with pytest.raises(UnreadableFile) as refused:
        read_bundle(path)
    assert str(refused.value) == "“export.json” is 1.2 MB; the limit is 1 MB."
