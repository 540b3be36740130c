"""The shortcuts a big import takes (issue #7) give exactly what the long way gives.

Phone numbers in the usual North American shapes skip phonenumbers.parse; new
objects skip Model.__init__; COPY takes plain values as they are; rows are parsed
on a thread of their own. Each is checked here against the long way round.
"""

import datetime as dt
import itertools
import json
import threading

import phonenumbers
import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connection

from imports import engine
from imports.engine import Importer, _maker, _refresh_search_fields
from imports.mapping import suggest
from imports.models import SourceRecallDate
from imports.parsing import _NANP, CellError, _north_american, parse_phone
from imports.readers import Table
from patients.models import Appointment, ExternalIdentifier, Patient
from patients.phones import InvalidPhone, normalize_phone
from patients.search import fold
from practicecrm import audit
from practicecrm.audit import _create_diffs, bulk_create_audited, copy_insert, system_actor
from tests.factories import AppointmentTypeFactory, PatientFactory

SHAPES = [
    "({a}) {b}-{c}",
    "{a}-{b}-{c}",
    "{a}.{b}.{c}",
    "{a}{b}{c}",
    "+1 {a} {b} {c}",
    "1-{a}-{b}-{c}",
    "+1({a}){b}-{c}",
    "1 ({a}) {b} {c}",
    " ({a}){b}{c} ",
]
# Area codes and exchanges that exist and that do not (N11, 555, 0xx/1xx exchanges).
AREAS = ["512", "210", "212", "416", "787", "876", "911", "555", "200", "999"]
EXCHANGES = ["555", "200", "011", "123", "911", "876", "000"]


def _slow(text: str, region: str) -> str:
    try:
        return normalize_phone(text, region)
    except InvalidPhone:
        return ""


@pytest.mark.parametrize("region", ["US", "CA", "GB"])
def test_north_american_numbers_read_as_phonenumbers_reads_them(region):
    for shape, area, exchange in itertools.product(SHAPES, AREAS, EXCHANGES):
        text = shape.format(a=area, b=exchange, c="0142")
        match = _NANP.fullmatch(text.strip())
        assert match, text
        if region != "GB":
            # What the shortcut builds instead of calling parse.
            assert phonenumbers.parse(text, region) == phonenumbers.PhoneNumber(
                country_code=1, national_number=int(area + exchange + "0142")
            ), text
        # The shortcut gives normalize_phone's number, or "" (then normalize_phone
        # runs and says why); outside the +1 regions it always stands aside.
        fast, slow = _north_american(text, region), _slow(text, region)
        assert fast == (slow if region != "GB" else ""), text


def test_a_refused_number_still_says_why(settings):
    settings.PHONE_DEFAULT_REGION = "US"
    with pytest.raises(CellError, match="not a valid phone number"):
        parse_phone("(555) 011-0142")
    assert parse_phone("(512) 555-0142") == "+15125550142"


def test_the_quick_constructor_makes_what_the_model_makes(north):
    values = {
        "first_name": "Zoë",
        "last_name": "Núñez",
        "date_of_birth": dt.date(1990, 1, 2),
        "home_location_id": north.pk,
        "language": Patient.Language.ES,
    }
    quick, slow = _maker(Patient)(**values), Patient(**values)
    assert {k: v for k, v in vars(quick).items() if k != "_state"} == {
        k: v for k, v in vars(slow).items() if k != "_state"
    }
    assert (quick._state.adding, quick._state.db) == (True, None)


@pytest.mark.django_db
def test_copy_insert_writes_what_the_objects_hold(north):
    if not _is_postgres():
        pytest.skip("COPY is PostgreSQL's")
    opted_out = dt.datetime(2026, 3, 8, 9, 30, tzinfo=dt.UTC)
    patients = [
        Patient(
            first_name="Ana",
            last_name="Lopez",
            date_of_birth=dt.date(1980, 3, 4),
            home_location=north,
            language=Patient.Language.ES,
            do_not_contact=True,
            sms_opted_out_at=opted_out,
        ),
        _maker(Patient)(
            first_name="Zoë",
            last_name="Núñez",
            date_of_birth=dt.date(1990, 1, 2),
            home_location_id=north.pk,
        ),
    ]
    copy_insert(Patient, patients)
    ana, zoe = (Patient.objects.get(pk=p.pk) for p in patients)
    assert (ana.language, ana.do_not_contact, ana.sms_opted_out_at) == ("es", True, opted_out)
    assert (zoe.first_name, zoe.date_of_birth, zoe.status) == ("Zoë", dt.date(1990, 1, 2), "active")
    assert ana.created_at == patients[0].created_at and ana.created_at is not None
    (external,) = copy_insert(
        ExternalIdentifier, [ExternalIdentifier(patient=patients[1], system="x", value="1")]
    )
    assert ExternalIdentifier.objects.get(pk=external.pk).patient_id == zoe.pk


@pytest.mark.django_db
def test_audit_entries_that_need_a_query_are_built_after_the_copy(north, monkeypatch):
    """Entries stream into their COPY while built; one that queries (an appointment
    whose type is not loaded, for its text) stops the stream, and it and the rest
    are written after — all of them, in order, as auditlog would write them."""
    if not _is_postgres():
        pytest.skip("COPY is PostgreSQL's")
    patient = PatientFactory(home_location=north)
    visit = AppointmentTypeFactory(name="Cleaning")
    start = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)

    def appointment(hours: int, *, loaded: bool) -> Appointment:
        made = Appointment(
            patient_id=patient.pk,
            location_id=north.pk,
            appointment_type_id=visit.pk,
            start=start + dt.timedelta(hours=hours),
            end=start + dt.timedelta(hours=hours, minutes=30),
        )
        if loaded:
            made.location, made.appointment_type = north, visit
        return made

    objs = [appointment(h, loaded=h != 2) for h in range(5)]
    after = []
    copy_after = audit._copy
    monkeypatch.setattr(audit, "_copy", lambda rows: copy_after(after.extend(rows) or after))
    with system_actor():
        created = bulk_create_audited(Appointment, objs)
    entries = list(
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Appointment)
        ).order_by("pk")
    )
    assert [e.object_id for e in entries] == [a.pk for a in created]
    assert [e.object_repr for e in entries] == [str(a) for a in created]
    assert [e.changes for e in entries] == [
        json.loads(json.dumps(d)) for d in _create_diffs(Appointment, created)
    ]
    assert len({e.timestamp for e in entries}) == 1
    # Two streamed; the one that looked its type up, and those after it, copied after.
    assert [row[1] for row in after] == [str(a.pk) for a in created[2:]]  # object_pk


@pytest.mark.django_db
def test_changes_as_json_are_the_text_json_dumps_makes_of_the_diffs(north):
    from tests.factories import AppointmentFactory, ChannelConsentFactory, FollowupFactory

    patient = PatientFactory(
        first_name="Zoë",
        last_name='O"Núñez\\tab\t',
        preferred_name="",
        do_not_contact=True,
        home_location=north,
    )
    opted_out = PatientFactory(sms_opted_out_at=dt.datetime(2026, 3, 8, 9, 30, tzinfo=dt.UTC))
    for objs in (
        [patient, opted_out],
        [ChannelConsentFactory(patient=patient)],
        [AppointmentFactory(patient=patient)],
        [FollowupFactory(patient=patient, location=patient.home_location)],
        [patient.home_location],
        [ExternalIdentifier.objects.create(patient=patient, system="ehr", value="ü-1")],
    ):
        model = type(objs[0])
        texts = list(_create_diffs(model, objs, as_json=True))
        dicts = list(_create_diffs(model, objs))
        assert texts == [json.dumps(d) if d else None for d in dicts], model.__name__
    with connection.cursor() as cursor:  # and PostgreSQL reads it as the same JSON
        cursor.execute("SELECT %s::jsonb = %s::jsonb", [texts[0], json.dumps(dicts[0])])
        assert cursor.fetchone() == (True,)


@pytest.mark.parametrize(
    "values",
    [
        {"first_name": "José", "last_name": "Núñez", "preferred_name": ""},
        {
            "first_name": "Zoë",
            "last_name": "O’Brien  Smith",
            "preferred_name": "Zo",
            "mobile_phone": "+15125550142",
            "home_phone": "+442071838750",
        },
        {
            "first_name": "Hương",
            "last_name": "Nguyễn",
            "preferred_name": "",
            "home_phone": "+15125550100",
        },
        {"first_name": " Ana ", "last_name": "ŁÆØ", "preferred_name": "Å"},
    ],
)
def test_the_imports_search_fields_are_the_models(values):
    quick, slow = Patient(**values), Patient(**values)
    _refresh_search_fields(quick)
    slow.refresh_search_fields()
    assert (quick.search_name, quick.search_phones) == (slow.search_name, slow.search_phones)


@pytest.mark.django_db
def test_a_big_file_leaves_the_shared_fold_cache_alone(source):
    fold.cache_clear()
    importer = Importer(source=source, headers=HEADERS, mapping=suggest(HEADERS), dry_run=False)
    report = importer.run(Table(headers=HEADERS, rows=_rows(300), kind="csv"))
    assert report.counts["new"] == 300
    # A name seen once stays out of the process's cache (memory flat in file size).
    assert fold.cache_info().currsize < 20


def _is_postgres() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


HEADERS = ["Chart", "First Name", "Last Name", "DOB", "Cell", "Next Recall"]


def _rows(count: int):
    for i in range(count):
        cell = f"(512) 555-{i:04d}"
        yield i + 2, [f"C-{i}", "Ana", f"Lopez{i}", "01/02/1980", cell, "2027-01-05"]


@pytest.mark.django_db
def test_the_reading_thread_stops_when_the_writing_fails(source, monkeypatch):
    monkeypatch.setattr(engine, "CHUNK", 2)
    threads = threading.active_count()

    def fail(self, rows):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Importer, "_chunk", fail)
    importer = Importer(source=source, headers=HEADERS, mapping=suggest(HEADERS), dry_run=False)
    with pytest.raises(RuntimeError, match="went away"):
        importer.run(Table(headers=HEADERS, rows=_rows(50), kind="csv"))
    assert threading.active_count() == threads


@pytest.mark.django_db
@pytest.mark.parametrize("read_ahead", [2, 0])
def test_chunks_read_on_the_thread_import_in_order(source, monkeypatch, read_ahead):
    monkeypatch.setattr(engine, "CHUNK", 3)
    monkeypatch.setattr(engine, "READ_AHEAD", read_ahead)
    importer = Importer(source=source, headers=HEADERS, mapping=suggest(HEADERS), dry_run=False)
    report = importer.run(Table(headers=HEADERS, rows=_rows(20), kind="csv"))
    assert report.counts["new"] == 20
    assert SourceRecallDate.objects.count() == 20
    ids = list(Patient.objects.order_by("pk").values_list("last_name", flat=True))
    assert ids == [f"Lopez{i}" for i in range(20)]


@pytest.mark.django_db
def test_a_dry_run_keeps_no_recall_dates_but_reports_the_same(source):
    dry = Importer(source=source, headers=HEADERS, mapping=suggest(HEADERS), dry_run=True)
    dry_report = dry.run(Table(headers=HEADERS, rows=_rows(5), kind="csv"))
    real = Importer(source=source, headers=HEADERS, mapping=suggest(HEADERS), dry_run=False)
    real_report = real.run(Table(headers=HEADERS, rows=_rows(5), kind="csv"))
    assert dry_report.as_dict() == real_report.as_dict()
    assert real_report.counts["recalls_opened"] == 5
