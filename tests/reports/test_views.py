"""The dashboard, drill-down and pilot pages: access, bad input, charts, CSV, queries."""

import datetime as dt

import pytest
from auditlog.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from locations.models import Role
from tests.factories import LocationFactory, PatientFactory, staff

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("reports:dashboard")
DRILL = reverse("reports:drilldown")
PILOT = reverse("reports:pilot")
EXPORT = reverse("reports:pilot_export")


@pytest.fixture
def clinics(build):
    """A manager of North and South; West has its own, recognisable data."""
    today = timezone.localdate()
    north = LocationFactory(
        name="North Clinic", slug="north", go_live_date=today - dt.timedelta(weeks=3)
    )
    south = LocationFactory(name="South Clinic", slug="south", time_zone="America/Los_Angeles")
    west = LocationFactory(
        name="West Clinic", slug="west", go_live_date=today - dt.timedelta(weeks=2)
    )
    manager = staff(Role.PRACTICE_MANAGER, north, south, username="pm")
    now = timezone.now()
    for location, last in ((north, "Northman"), (south, "Southby"), (west, "Westwood")):
        patient = PatientFactory(home_location=location, first_name="Pat", last_name=last)
        f = build.followup(location, due=today - dt.timedelta(days=3), patient=patient)
        build.attempt(f, now - dt.timedelta(days=2))
        build.message(location, status="delivered", at=now - dt.timedelta(days=1), patient=patient)
    # West is busier, so its numbers could not hide among the others'.
    for _ in range(7):
        f = build.followup(west, due=today - dt.timedelta(days=5))
        build.attempt(f, now - dt.timedelta(days=2))
    return north, south, west, manager


def test_it_shows_the_managers_locations_and_not_a_third(client, clinics):
    _north, _south, _west, manager = clinics
    client.force_login(manager)
    response = client.get(DASHBOARD)
    html = response.content.decode()
    assert response.status_code == 200
    assert "North Clinic" in html and "South Clinic" in html
    assert "West Clinic" not in html
    total = response.context["recall_total"]
    assert (total.due, total.contacted) == (2, 2)  # West's 8 are not in it
    assert response.context["reminder_total"].sent == 2
    assert sum(p.values["attempts"] for p in response.context["trend"]) == 2
    assert 'role="img"' in html and '<title id="recall-chart-title">' in html
    assert "within 14 days after a staff contact attempt" in html  # the attribution rule


def test_it_leaves_out_a_deactivated_location_of_the_manager(client, clinics):
    north, south, _west, manager = clinics
    south.is_active = False
    south.save(update_fields=["is_active"])
    client.force_login(manager)
    response = client.get(DASHBOARD)
    assert [loc.pk for loc in response.context["locations"]] == [north.pk]
    assert response.context["recall_total"].due == 1
    assert client.get(DASHBOARD, {"location": south.pk}).status_code == 404


def test_it_answers_404_for_another_locations_numbers_everywhere(client, clinics):
    north, _south, west, manager = clinics
    client.force_login(manager)
    for url in (DASHBOARD, DRILL, PILOT, EXPORT):
        assert client.get(url, {"location": west.pk}).status_code == 404, url
    assert client.get(EXPORT, {"location": [north.pk, west.pk]}).status_code == 404


def test_it_lists_only_own_patients_behind_a_number(client, clinics):
    _north, south, _west, manager = clinics
    client.force_login(manager)
    response = client.get(DRILL, {"metric": "contacted", "period": "4w"})
    html = response.content.decode()
    assert "Northman" in html and "Southby" in html
    assert "Westwood" not in html
    assert response.context["page"].paginator.count == 2
    one = client.get(DRILL, {"metric": "contacted", "location": south.pk})
    assert [f.patient.last_name for f in one.context["page"].object_list] == ["Southby"]
    sent = client.get(DRILL, {"metric": "sent"})
    assert "Westwood" not in sent.content.decode()
    assert sent.context["page"].paginator.count == 2
    assert client.get(DRILL, {"metric": "nonsense"}).status_code == 404


def test_it_matches_each_number_with_its_list(client, clinics):
    north, _south, _west, manager = clinics
    client.force_login(manager)
    page = client.get(DASHBOARD, {"location": north.pk})
    line = page.context["recall_lines"][0]
    for metric in ("due", "overdue", "contacted", "booked"):
        listed = client.get(DRILL, {"metric": metric, "location": north.pk})
        assert listed.context["page"].paginator.count == getattr(line, metric), metric


def test_it_refuses_front_desk_and_care_staff(client, clinics):
    north, *_ = clinics
    for role in (Role.FRONT_DESK, Role.CARE_STAFF):
        client.force_login(staff(role, north, username=f"u-{role}"))
        for url in (DASHBOARD, DRILL, PILOT, EXPORT):
            assert client.get(url).status_code == 404
        assert "Reports" not in client.get(reverse("followups:today")).content.decode()


def test_it_explains_bad_dates_next_to_the_field(client, clinics):
    *_, manager = clinics
    client.force_login(manager)
    backwards = client.get(
        DASHBOARD, {"period": "custom", "start": "2026-03-10", "end": "2026-03-01"}
    )
    assert backwards.status_code == 200
    assert "The last day must not be before the first day." in backwards.content.decode()
    assert "recall_total" not in backwards.context
    malformed = client.get(DASHBOARD, {"period": "custom", "start": "2026-13-45", "end": "x"})
    html = malformed.content.decode()
    assert malformed.status_code == 200
    assert "Enter a date such as 2026-03-01." in html
    assert 'id="id_start_error"' in html
    missing = client.get(DRILL, {"period": "custom", "metric": "due"})
    assert "Give the first day of the period." in missing.content.decode()
    too_long = client.get(
        DASHBOARD, {"period": "custom", "start": "2024-01-01", "end": "2026-01-01"}
    )
    assert "Choose at most a year" in too_long.content.decode()
    unknown = client.get(DASHBOARD, {"period": "decade"})
    assert unknown.status_code == 200 and "not one of the available choices" in (
        unknown.content.decode()
    )


def test_it_exports_the_pilot_report_as_csv_with_an_audit_entry(client, clinics):
    north, _south, _west, manager = clinics
    client.force_login(manager)
    page = client.get(PILOT)
    assert page.status_code == 200
    assert page.context["chosen"] == [north]  # the one pilot location the manager has
    assert page.context["report"] is not None
    assert "West Clinic" not in page.content.decode()
    response = client.get(EXPORT, {"location": north.pk, "weeks": 4, "format": "csv"})
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    lines = text.strip().splitlines()
    assert lines[0].startswith("Week,From,To,Days,Follow-ups completed")
    assert lines[1].startswith("Week -4,")
    assert lines[-1].startswith("Average per week after")
    entry = LogEntry.objects.filter(action=LogEntry.Action.ACCESS).latest("timestamp")
    assert entry.additional_data["export"]["view"] == "reports:pilot_export"
    assert entry.additional_data["export"]["filters"]["locations"] == [north.pk]
    assert entry.actor == manager
    assert client.get(EXPORT, {"location": north.pk, "format": "pdf"}).status_code == 400


def test_it_asks_for_a_go_live_date_where_there_is_none(client, clinics):
    _north, south, _west, manager = clinics
    client.force_login(manager)
    response = client.get(PILOT, {"location": south.pk})
    assert response.status_code == 200
    assert "South Clinic has no go-live date yet" in response.content.decode()
    assert client.get(EXPORT, {"location": south.pk}).status_code == 404


def _dashboard_queries(client, user) -> int:
    client.force_login(user)
    client.get(DASHBOARD)  # warm: session, content types
    with CaptureQueriesContext(connection) as queries:
        assert client.get(DASHBOARD).status_code == 200
    return len(queries)


def test_its_query_count_does_not_grow_with_locations_or_patients(client, build):
    def world(locations: int, patients: int, name: str):
        sites = [LocationFactory(name=f"{name} {i}", slug=f"{name}-{i}") for i in range(locations)]
        now, today = timezone.now(), timezone.localdate()
        for i in range(patients):
            site = sites[i % locations]
            f = build.followup(site, due=today - dt.timedelta(days=i % 40))
            build.attempt(f, now - dt.timedelta(days=i % 20))
            if i % 3 == 0:
                build.book(f, recorded=now - dt.timedelta(days=i % 10))
            build.message(site, status="delivered", at=now - dt.timedelta(days=i % 25))
        admin = staff(Role.ADMIN, *sites, username=f"admin-{name}")
        return admin

    small = _dashboard_queries(client, world(2, 10, "small"))
    big = _dashboard_queries(client, world(6, 60, "big"))
    assert small == big
    assert big <= 25
