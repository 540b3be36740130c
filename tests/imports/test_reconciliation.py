"""The side-by-side report: the old tool's recall dates against our follow-ups."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from followups.models import Followup
from imports.models import ImportSource, SourceRecallDate
from imports.reconciliation import difference_days, reconcile
from locations.models import Role
from tests.factories import FollowupFactory, FollowupTypeFactory, PatientFactory, staff

pytestmark = pytest.mark.django_db
URL = reverse("imports:reconciliation")


@pytest.fixture
def today():
    return timezone.localdate()


@pytest.fixture
def source(north):
    return ImportSource.objects.create(name="Old spreadsheet", system="old-sheet", location=north)


def kept(source, patient, due: dt.date) -> SourceRecallDate:
    return SourceRecallDate.objects.create(
        patient=patient, source=source, location=patient.home_location, due_date=due
    )


def due(patient, on: dt.date, status=Followup.Status.OPEN, code="hygiene-recall") -> Followup:
    kind = FollowupTypeFactory(code=code, name=code.replace("-", " ").capitalize())
    return FollowupFactory(patient=patient, followup_type=kind, due_date=on, status=status)


@pytest.fixture
def world(north, south, source, today):
    """One patient per case at North, and one at South that North never sees."""
    people = {
        name: PatientFactory(home_location=north, last_name=name)
        for name in ("Agrees", "Apart", "SheetOnly", "CrmOnly", "Later", "Dismissed", "Two")
    }
    kept(source, people["Agrees"], today + dt.timedelta(days=10))
    due(people["Agrees"], today + dt.timedelta(days=12))
    kept(source, people["Apart"], today + dt.timedelta(days=5))
    due(people["Apart"], today - dt.timedelta(days=40), status=Followup.Status.CONTACTED)
    kept(source, people["SheetOnly"], today - dt.timedelta(days=3))
    due(people["CrmOnly"], today + dt.timedelta(days=30))  # the horizon itself counts
    kept(source, people["Later"], today + dt.timedelta(days=31))  # past the horizon
    due(people["Later"], today + dt.timedelta(days=60))
    kept(source, people["Dismissed"], today)
    due(people["Dismissed"], today, status=Followup.Status.DISMISSED)
    # Two due follow-ups: the earliest is the one that counts, and once.
    kept(source, people["Two"], today + dt.timedelta(days=1))
    due(people["Two"], today + dt.timedelta(days=20), code="exam-recall")
    due(people["Two"], today + dt.timedelta(days=2))
    elsewhere = PatientFactory(home_location=south, last_name="Elsewhere")
    kept(source, elsewhere, today)
    due(elsewhere, today)
    return people


def test_it_sorts_patients_into_the_three_lists(world, source, north, today):
    manager = staff(Role.PRACTICE_MANAGER, north)
    result = reconcile(user=manager, source=source, location=north)
    assert result.horizon == today + dt.timedelta(days=30)
    both = {k.patient.last_name: k for k in result.both}
    assert set(both) == {"Agrees", "Apart", "Two"}
    assert difference_days(both["Agrees"]) == 2
    assert difference_days(both["Apart"]) == -45
    assert (both["Two"].crm_due, both["Two"].crm_type) == (
        today + dt.timedelta(days=2),
        "Hygiene recall",
    )
    assert [k.patient.last_name for k in result.far_apart] == ["Apart"]
    assert {k.patient.last_name for k in result.only_sheet} == {"SheetOnly", "Dismissed"}
    assert [p.last_name for p in result.only_crm] == ["CrmOnly"]
    assert result.counts() == {"both": 3, "sheet": 2, "crm": 1, "far_apart": 1}


def test_a_longer_horizon_brings_later_patients_in(world, source, north, today):
    manager = staff(Role.PRACTICE_MANAGER, north)
    horizon = today + dt.timedelta(days=90)
    result = reconcile(user=manager, source=source, location=north, horizon=horizon)
    assert "Later" in {k.patient.last_name for k in result.both}


def test_the_page_shows_counts_dates_and_the_far_apart_flag(client, world, source, north):
    client.force_login(staff(Role.PRACTICE_MANAGER, north))
    response = client.get(URL, {"location": north.pk, "source": source.pk})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Agrees" in page and "Apart" in page and "SheetOnly" not in page
    assert "45 days earlier" in page and "2 days later" in page
    assert "more than 30 days apart" in page
    assert response.context["counts"] == {"both": 3, "sheet": 2, "crm": 1, "far_apart": 1}
    only_crm = client.get(URL, {"location": north.pk, "source": source.pk, "show": "crm"})
    assert "CrmOnly" in only_crm.content.decode() and "Agrees" not in only_crm.content.decode()


def test_without_parameters_it_picks_the_users_location_and_source(client, world, north):
    client.force_login(staff(Role.ADMIN, north))
    response = client.get(URL)
    assert response.status_code == 200
    assert response.context["location"] == north
    assert response.context["counts"]["both"] == 3


def test_with_no_source_yet_it_says_so(client, north):
    client.force_login(staff(Role.PRACTICE_MANAGER, north))
    response = client.get(URL)
    assert response.status_code == 200
    assert "Nothing imported for North Clinic yet" in response.content.decode()


@pytest.mark.parametrize("role", [Role.FRONT_DESK, Role.CARE_STAFF])
def test_front_desk_and_care_staff_get_a_404(client, world, north, role):
    client.force_login(staff(role, north))
    assert client.get(URL).status_code == 404


def test_another_location_or_an_unknown_source_is_a_404(client, world, source, north, south):
    client.force_login(staff(Role.PRACTICE_MANAGER, north))
    assert client.get(URL, {"location": south.pk}).status_code == 404
    assert client.get(URL, {"location": north.pk, "source": 999999}).status_code == 404
    # South's manager sees South's patient, and none of North's.
    client.force_login(staff(Role.PRACTICE_MANAGER, south))
    response = client.get(URL, {"location": south.pk, "source": source.pk})
    assert response.status_code == 200
    assert response.context["counts"] == {"both": 1, "sheet": 0, "crm": 0, "far_apart": 0}


def test_queries_do_not_grow_with_rows(client, source, north, today):
    client.force_login(staff(Role.PRACTICE_MANAGER, north))

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(URL, {"source": source.pk}).status_code == 200
        return len(captured)

    patient = PatientFactory(home_location=north)
    kept(source, patient, today)
    due(patient, today)
    queries()  # the first request of a session does its own bookkeeping
    few = queries()
    for _ in range(15):
        patient = PatientFactory(home_location=north)
        kept(source, patient, today)
        due(patient, today)
    assert queries() == few
