"""Reads, already narrowed to the user's locations: search, timeline, appointments."""

import datetime as dt

import pytest
from django.http import Http404

from locations.access import CHANGE_APPOINTMENTS, CHANGE_PATIENTS
from locations.models import Role
from patients import selectors
from patients.models import Patient
from tests.factories import (
    AppointmentFactory,
    GrantFactory,
    HouseholdFactory,
    LocationFactory,
    PatientFactory,
    staff,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def nunez(north):
    return PatientFactory(
        home_location=north,
        first_name="Zoë",
        last_name="Núñez",
        preferred_name="Zo",
        date_of_birth=dt.date(1984, 3, 7),
        mobile_phone="+15125550142",
        home_phone="+442079460958",
    )


@pytest.fixture
def others(north, south):
    """Near misses at North, and South's patients that share every searchable detail."""
    return [
        PatientFactory(
            home_location=north,
            first_name="Zachary",
            last_name="Nash",
            date_of_birth=dt.date(1984, 7, 3),
            mobile_phone="+15125559876",
        ),
        PatientFactory(
            home_location=south,
            first_name="Zoë",
            last_name="Núñez",
            date_of_birth=dt.date(1984, 3, 7),
            mobile_phone="+15125550142",
        ),
    ]


def search(user, query: str) -> list[Patient]:
    return list(selectors.patient_list(user=user, query=query))


@pytest.mark.parametrize(
    "query",
    [
        "nunez",
        "Núñez",
        "NUÑEZ",
        "ZOE",
        "zoë",
        "ñez",
        "une",
        "zo nu",
        "nunez zoe",
        "Zoë Núñez",
        "  zoe   nunez ",
    ],
)
def test_it_finds_a_patient_by_any_part_of_the_name(front_desk, nunez, others, query):
    assert search(front_desk, query) == [nunez]


def test_it_finds_a_patient_by_preferred_name(front_desk, nunez, others, north):
    assert nunez in search(front_desk, "zo")
    bobby = PatientFactory(home_location=north, first_name="Robert", preferred_name="Bobby")
    assert search(front_desk, "bobby") == [bobby]


def test_it_needs_every_token_to_match(front_desk, nunez, others):
    assert search(front_desk, "zoe nash") == []


@pytest.mark.parametrize(
    "query",
    [
        "(512) 555-0142",
        "512.555.0142",
        "512-555-0142",
        "+1 512 555 0142",
        "15125550142",
        "5125550142",
        "5550142",
        "555-0142",
        "0142",
    ],
)
def test_it_finds_a_patient_by_phone_in_any_format(front_desk, nunez, others, query):
    assert search(front_desk, query) == [nunez]


def test_it_finds_a_patient_by_home_phone_too(front_desk, nunez, others):
    assert search(front_desk, "+44 20 7946 0958") == [nunez]
    assert search(front_desk, "020 7946 0958") == []  # a UK trunk 0 is not a digit we store


@pytest.mark.parametrize("query", ["1984-03-07", "03/07/1984", "3/7/1984", "Mar 7 1984"])
def test_it_finds_a_patient_by_date_of_birth(front_desk, nunez, others, query):
    assert search(front_desk, query) == [nunez]


def test_it_never_returns_another_locations_patient(front_desk, nunez, others):
    south_twin = others[1]
    for query in ["", "nunez", "zoe", "5550142", "1984-03-07", "0142"]:
        assert south_twin not in search(front_desk, query), query


def test_it_lists_every_visible_patient_when_the_query_is_empty(front_desk, nunez, others):
    assert search(front_desk, "") == [others[0], nunez]  # Nash before Núñez


def test_it_lists_a_shared_patient_once(front_desk, north, south):
    patient = PatientFactory(home_location=south)
    patient.shared_with.add(north, south)
    GrantFactory(user=front_desk, location=south, role=Role.CARE_STAFF)
    assert search(front_desk, "") == [patient]


def test_it_filters_by_location_including_patients_shared_there(front_desk, north, south):
    GrantFactory(user=front_desk, location=south, role=Role.FRONT_DESK)
    at_north = PatientFactory(home_location=north, last_name="Adams")
    at_south = PatientFactory(home_location=south, last_name="Baker")
    shared = PatientFactory(home_location=south, last_name="Clark")
    shared.shared_with.add(north)
    assert list(selectors.patient_list(user=front_desk, location=north)) == [at_north, shared]
    assert list(selectors.patient_list(user=front_desk, location=south)) == [at_south, shared]


def test_the_list_count_adds_its_two_halves_to_the_lists_length(front_desk, north, south):
    """visible_patient_count: home here, or shared here with a home elsewhere — each
    patient once, merged records and other locations' patients never."""
    east = LocationFactory(name="East")
    PatientFactory.create_batch(3, home_location=north, last_name="Home")
    shared_in = PatientFactory(home_location=south, last_name="Shared")
    shared_in.shared_with.add(north)
    both = PatientFactory(home_location=north, last_name="Both")
    both.shared_with.add(north, east)
    PatientFactory(home_location=north, last_name="Gone", merged_into=both)
    PatientFactory.create_batch(2, home_location=south, last_name="Away")
    PatientFactory(home_location=east, last_name="Away").shared_with.add(south)

    for kwargs in ({}, {"location": north}, {"location": south}, {"query": "shared"}):
        rows = selectors.patient_list(user=front_desk, **kwargs)
        assert selectors.visible_patient_count(rows, user=front_desk) == len(list(rows)), kwargs
    everyone = selectors.patient_list(user=front_desk)
    assert selectors.visible_patient_count(everyone, user=front_desk) == 5


def test_it_filters_by_status(front_desk, north):
    active = PatientFactory(home_location=north)
    PatientFactory(home_location=north, status=Patient.Status.DECEASED)
    assert list(selectors.patient_list(user=front_desk, status="active")) == [active]


def test_it_returns_nothing_to_a_user_without_grants(no_grant, nunez):
    assert search(no_grant, "") == []


def test_it_gets_a_patient_only_with_the_permission_asked_for(north, nunez, south):
    care = staff(Role.CARE_STAFF, north)
    assert selectors.patient_get(user=care, pk=nunez.pk) == nunez
    with pytest.raises(Http404):
        selectors.patient_get(user=care, pk=nunez.pk, perm=CHANGE_PATIENTS)
    with pytest.raises(Http404):
        selectors.patient_get(user=care, pk=PatientFactory(home_location=south).pk)


def test_it_gets_an_appointment_to_change_only_at_a_location_with_the_grant(north, south, nunez):
    at_north = AppointmentFactory(patient=nunez)
    at_south = AppointmentFactory(patient=nunez, location=south)
    user = staff(Role.FRONT_DESK, north)
    assert selectors.appointment_get(user=user, pk=at_south.pk) == at_south  # may see it
    assert selectors.appointment_get(user=user, pk=at_north.pk, perm=CHANGE_APPOINTMENTS)
    with pytest.raises(Http404):
        selectors.appointment_get(user=user, pk=at_south.pk, perm=CHANGE_APPOINTMENTS)


def test_it_hides_household_members_the_user_may_not_see(front_desk, north, south, nunez):
    household = HouseholdFactory()
    sibling = PatientFactory(home_location=north, household=household)
    PatientFactory(home_location=south, household=household)  # a cousin filed at South
    nunez.household = household
    nunez.save()
    context = selectors.patient_detail_context(patient=nunez, user=front_desk)
    assert context["household_members"] == [sibling]


def test_it_offers_only_households_with_a_visible_member(front_desk, north, south):
    mine, theirs = HouseholdFactory(), HouseholdFactory()
    PatientFactory(home_location=north, household=mine)
    PatientFactory(home_location=south, household=theirs)
    assert list(selectors.households_visible_to(front_desk)) == [mine]


def read_whole_timeline(patient, limit):
    items, cursor, pages = [], None, 0
    while True:
        page, cursor = selectors.patient_timeline(patient=patient, before=cursor, limit=limit)
        items += page
        pages += 1
        if cursor is None:
            return items, pages


def test_it_pages_the_timeline_newest_first_with_a_cursor(nunez):
    base = dt.datetime(2025, 1, 1, 15, tzinfo=dt.UTC)
    appointments = [
        AppointmentFactory(patient=nunez, start=base + dt.timedelta(days=i)) for i in range(30)
    ]
    items, pages = read_whole_timeline(nunez, limit=10)
    # 31 items: 30 appointments and the patient's recorded creation (an
    # appointment's own creation entry is not repeated beside it).
    assert pages == 4
    whens = [item.when for item in items]
    assert whens == sorted(whens, reverse=True)
    assert [i.appointment for i in items if i.kind == "appointment"] == appointments[::-1]
    assert len([i for i in items if i.kind == "change"]) == 1


def test_it_loses_no_timeline_item_that_shares_its_time_across_a_page_break(nunez):
    # A cancelled visit and its rebooking at the same slot, where the page breaks.
    base = dt.datetime(2025, 1, 1, 15, tzinfo=dt.UTC)
    for i in range(6):
        AppointmentFactory(patient=nunez, start=base + dt.timedelta(days=i))
    cancelled = AppointmentFactory(patient=nunez, start=base - dt.timedelta(days=1))
    rebooked = AppointmentFactory(patient=nunez, start=cancelled.start)
    AppointmentFactory(patient=nunez, start=base - dt.timedelta(days=2))
    # The patient's recorded creation comes first (it happened today), then six
    # visits and one of the pair: the page breaks between the two.
    items, _ = read_whole_timeline(nunez, limit=8)
    shown = {item.appointment for item in items if item.kind == "appointment"}
    assert {cancelled, rebooked} <= shown
    assert len(shown) == 9


def test_it_leaves_accesses_out_of_the_timeline(client, front_desk, nunez):
    client.force_login(front_desk)
    client.get(nunez.get_absolute_url())
    timeline, _ = selectors.patient_timeline(patient=nunez)
    assert all(item.entry.action != item.entry.Action.ACCESS for item in timeline if item.entry)


def test_it_reads_a_two_digit_birth_year_in_the_past():
    from patients.search import parse_query

    assert parse_query("03/07/55").dob == dt.date(1955, 3, 7)
    assert parse_query("03/07/05").dob == dt.date(2005, 3, 7)
    assert parse_query("March 7 1955").dob == dt.date(1955, 3, 7)
