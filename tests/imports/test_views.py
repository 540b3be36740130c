"""The import pages: upload → mapping → dry run → import (Celery) → report, per role."""

from pathlib import Path

import pytest
from auditlog.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from imports import tasks
from imports.models import ImportBatch, ImportSource, ImportUpload
from locations.models import Role
from patients.models import Patient
from tests.factories import FollowupTypeFactory, LocationFactory, PatientFactory, staff

DEMO = Path(__file__).resolve().parents[2] / "imports" / "demo"
SPREADSHEET = DEMO / "riverside-old-spreadsheet.csv"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def north(db):
    # The demo spreadsheet's "Office" column says Austin.
    return LocationFactory(name="North Clinic", slug="north", city="Austin")


@pytest.fixture
def admin(north):
    return staff(Role.ADMIN, north, username="admin")


@pytest.fixture
def source(north):
    return ImportSource.objects.create(
        name="Old spreadsheet",
        system="old-spreadsheet",
        location=north,
        recall_type=FollowupTypeFactory(code="hygiene-recall", name="Hygiene recall"),
    )


def demo_file(name: str = SPREADSHEET.name) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, SPREADSHEET.read_bytes(), content_type="text/csv")


def upload(client, source, file=None) -> ImportUpload:
    response = client.post(
        reverse("imports:upload"), {"source": source.pk, "file": file or demo_file()}
    )
    assert response.status_code == 302, response.content[:500]
    up = ImportUpload.objects.get(pk=response["Location"].split("/")[3])
    assert response["Location"] == reverse("imports:mapping", args=[up.pk])
    return up


def mapping_body(up: ImportUpload, **changes) -> dict:
    mapping = {**up.mapping, **changes}
    return {f"col_{i}": mapping[h] for i, h in enumerate(up.headers)}


def test_it_imports_the_demo_spreadsheet_from_upload_to_report(
    client, manager, source, django_capture_on_commit_callbacks
):
    client.force_login(manager)
    up = upload(client, source)
    assert up.path.exists() and up.path.parent.name == "imports"

    page = client.get(reverse("imports:mapping", args=[up.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Chart #" in html and "RD-1001" in html  # the header and its sample values
    form = page.context["form"]
    assert form["col_2"].value() == "date_of_birth"  # "DOB", suggested

    response = client.post(reverse("imports:mapping", args=[up.pk]), mapping_body(up))
    assert response["Location"] == reverse("imports:preview", args=[up.pk])
    assert not Patient.objects.exists()  # a dry run writes nothing
    preview = client.get(response["Location"])
    counts = {k: v for k, _, v in preview.context["counts"]}
    assert counts == {
        "new": 7,
        "updated": 0,
        "unchanged": 0,
        "duplicate_suspect": 0,
        "rejected": 1,
    }
    assert "date of birth is empty" in preview.content.decode()
    up.refresh_from_db()
    assert up.total_rows == 8

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(reverse("imports:confirm", args=[up.pk]))
    assert response["Location"] == reverse("imports:progress", args=[up.pk])
    assert len(queued) == 1
    # The second click queues nothing more.
    with django_capture_on_commit_callbacks(execute=False) as again:
        client.post(reverse("imports:confirm", args=[up.pk]))
    assert again == []
    waiting = client.get(reverse("imports:progress", args=[up.pk]))
    assert waiting.context["running"] and 'hx-trigger="every 1s"' in waiting.content.decode()

    batch_id = tasks.run_import(str(up.pk))  # what the worker does
    batch = ImportBatch.objects.get(pk=batch_id)
    assert (batch.dry_run, batch.status, batch.created_by) == (False, "done", manager)
    assert Patient.objects.count() == 7
    assert not up.path.exists()  # read, then deleted
    # The audit trail names the manager, not the worker's system account.
    created = LogEntry.objects.get_for_model(Patient).filter(action=LogEntry.Action.CREATE)
    assert {e.actor for e in created} == {manager}

    done = client.get(reverse("imports:progress", args=[up.pk]), headers={"HX-Request": "true"})
    html = done.content.decode()
    assert "hx-trigger" not in html  # polling stops
    assert (
        "Import finished: 8 rows read" in html
        and reverse("imports:report", args=[batch.pk]) in html
    )
    # On to the side-by-side comparison for this source and its location.
    query = f"location={up.source.location_id}&amp;source={up.source_id}"
    compare = f"{reverse('imports:reconciliation')}?{query}"
    assert compare in html
    assert client.get(compare.replace("&amp;", "&")).status_code == 200

    report = client.get(reverse("imports:report", args=[batch.pk]))
    assert report["Content-Type"].startswith("text/csv")
    lines = report.content.decode().splitlines()
    assert lines[0] == "line,column,reason,outcome"
    assert "8,DOB,date of birth is empty,rejected: not imported" in lines

    listing = client.get(reverse("imports:batches"))
    kinds = [(b.dry_run, b.file_name) for b, _ in listing.context["rows"]]
    assert kinds == [(False, SPREADSHEET.name), (True, SPREADSHEET.name)]


def test_it_saves_the_mapping_per_source_so_the_next_upload_maps_itself(
    client, manager, source, django_capture_on_commit_callbacks
):
    client.force_login(manager)
    first = upload(client, source)
    # "Home Phone" is suggested as the home phone; the person ignores it, and the
    # next file from the same source must remember that.
    body = mapping_body(first, **{"Home Phone": ""})
    client.post(reverse("imports:mapping", args=[first.pk]), body)
    client.post(reverse("imports:confirm", args=[first.pk]))
    tasks.run_import(str(first.pk))
    source.refresh_from_db()
    assert source.mapping["Home Phone"] == ""

    second = upload(client, source)
    assert second.mapping == source.mapping
    page = client.get(reverse("imports:mapping", args=[second.pk]))
    assert page.context["form"]["col_4"].value() == ""


def test_it_creates_a_source_with_the_upload(client, manager, north):
    client.force_login(manager)
    recall = FollowupTypeFactory(code="hygiene-recall", name="Hygiene recall")
    response = client.post(
        reverse("imports:upload"),
        {
            "name": "Old spreadsheet",
            "location": north.pk,
            "recall_type": recall.pk,
            "file": demo_file(),
        },
    )
    assert response.status_code == 302
    created = ImportSource.objects.get()
    assert (created.system, created.location, created.recall_type) == (
        "old-spreadsheet",
        north,
        recall,
    )


def test_it_shows_why_a_file_is_refused_and_keeps_nothing(client, manager, north, tmp_path):
    client.force_login(manager)
    pdf = SimpleUploadedFile("patients.csv", b"%PDF-1.4 binary", content_type="text/csv")
    response = client.post(
        reverse("imports:upload"), {"name": "Old spreadsheet", "location": north.pk, "file": pdf}
    )
    assert response.status_code == 200
    errors = response.context["form"].errors["file"]
    assert errors == [
        "“patients.csv” is not a text table (CSV) or an Excel .xlsx file. "
        "In your spreadsheet, use File → Save as → CSV or Excel Workbook (.xlsx)."
    ]
    assert 'class="field-error"' in response.content.decode()
    assert not ImportSource.objects.exists() and not ImportUpload.objects.exists()
    assert not any((tmp_path / "media").rglob("*.*")) and not any(
        p.is_file() for p in (tmp_path / "media").rglob("*")
    )


def test_it_shows_the_mappings_problems_and_runs_no_dry_run(client, manager, source):
    client.force_login(manager)
    up = upload(client, source)
    body = mapping_body(up, DOB="")
    response = client.post(reverse("imports:mapping", args=[up.pk]), body)
    assert response.status_code == 200
    assert response.context["problems"] == [
        "Map the date of birth: it is how people are told apart."
    ]
    assert not ImportBatch.objects.exists()


def test_it_refuses_a_column_mapped_twice(client, manager, source):
    client.force_login(manager)
    up = upload(client, source)
    response = client.post(
        reverse("imports:mapping", args=[up.pk]), mapping_body(up, **{"Home Phone": "mobile_phone"})
    )
    assert response.status_code == 200
    assert response.context["form"].errors["col_4"] == ["“Cell” is already mapped to mobile phone."]


def test_it_lists_suspects_only_among_patients_the_user_can_change(client, manager, source, south):
    # Same birth date and last name, another spelling: a suspect, at each location.
    PatientFactory(
        home_location=source.location,
        first_name="Josef",
        last_name="Nunez",
        date_of_birth="1994-10-04",
    )
    PatientFactory(
        home_location=south, first_name="Amarachi", last_name="Okafor", date_of_birth="1987-02-17"
    )
    client.force_login(manager)
    up = upload(client, source)
    client.post(reverse("imports:mapping", args=[up.pk]), mapping_body(up))
    preview = client.get(reverse("imports:preview", args=[up.pk]))
    links = {r["name"]: r["visible"] for s in preview.context["suspects"] for r in s["resembles"]}
    # Rows reach only patients the manager may change: South's record is neither
    # matched, updated nor named.
    assert links == {"Josef Nunez": True}
    assert "Amarachi" not in preview.content.decode()

    up.refresh_from_db()
    accesses = LogEntry.objects.filter(action=LogEntry.Action.ACCESS)
    before = accesses.count()
    report = client.get(reverse("imports:report", args=[up.preview_id]))
    assert "looks like Josef Nunez" in report.content.decode()
    # A report with patient names in it is access to them, on record.
    assert accesses.count() == before + 1
    assert accesses.latest("timestamp").actor == manager


def test_it_answers_404_for_another_locations_source_upload_and_batch(client, manager, south):
    other = ImportSource.objects.create(name="South sheet", system="south-sheet", location=south)
    other_upload = ImportUpload.objects.create(source=other, file_name="s.csv", headers=["a", "b"])
    other_batch = ImportBatch.objects.create(source=other, file_name="s.csv", sha256="0", size=1)
    client.force_login(manager)
    for name, pk in (
        ("imports:mapping", other_upload.pk),
        ("imports:preview", other_upload.pk),
        ("imports:progress", other_upload.pk),
        ("imports:batch", other_batch.pk),
        ("imports:report", other_batch.pk),
    ):
        assert client.get(reverse(name, args=[pk])).status_code == 404, name
    assert client.post(reverse("imports:confirm", args=[other_upload.pk])).status_code == 404
    response = client.post(reverse("imports:upload"), {"source": other.pk, "file": demo_file()})
    assert response.status_code == 200 and "source" in response.context["form"].errors
    assert not client.get(reverse("imports:batches")).context["rows"]


@pytest.mark.parametrize("role", ["front_desk", "care_staff"])
def test_it_refuses_front_desk_and_care_staff(client, role, source, request):
    client.force_login(request.getfixturevalue(role))
    assert client.get(reverse("imports:batches")).status_code == 404
    assert client.get(reverse("imports:upload")).status_code == 404
    assert (
        client.post(
            reverse("imports:upload"), {"source": source.pk, "file": demo_file()}
        ).status_code
        == 404
    )
    assert not ImportUpload.objects.exists()
    assert "Imports" not in client.get(reverse("patients:list")).content.decode()


def test_it_shows_the_imports_link_to_managers(client, manager):
    client.force_login(manager)
    assert reverse("imports:batches") in client.get(reverse("patients:list")).content.decode()
