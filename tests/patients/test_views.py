"""The patient pages: list and search, patient page, edits, and their query counts."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from locations.models import Role
from patients.models import Patient
from tests.factories import (
    AppointmentFactory,
    ChannelConsentFactory,
    GrantFactory,
    HouseholdFactory,
    PatientFactory,
    ProviderFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged_in(client, front_desk):
    client.force_login(front_desk)
    return client


# --- list and search -----------------------------------------------------------------


def test_it_lists_the_patients_of_the_users_locations(logged_in, north_patient, south_patient):
    response = logged_in.get(reverse("patients:list"))
    html = response.content.decode()
    assert list(response.context["page"].object_list) == [north_patient]
    assert "Núñez" in html
    assert "Okafor" not in html


def test_it_pages_the_list_25_at_a_time(logged_in, north):
    PatientFactory.create_batch(30, home_location=north)
    first = logged_in.get(reverse("patients:list"))
    second = logged_in.get(reverse("patients:list"), {"page": 2})
    assert len(first.context["page"].object_list) == 25
    assert len(second.context["page"].object_list) == 5
    assert not set(first.context["page"].object_list) & set(second.context["page"].object_list)


def test_past_the_count_cap_the_list_says_so_and_pages_reach_the_cap(
    logged_in, north, south, front_desk, settings
):
    settings.PATIENT_LIST_COUNT_CAP = 30
    PatientFactory.create_batch(28, home_location=north)
    shared = PatientFactory.create_batch(4, home_location=south)  # the second half
    for patient in shared:
        patient.shared_with.add(north)
    html = logged_in.get(reverse("patients:list")).content.decode()
    assert "Page 1 of 2 · 30+ patients" in html
    assert "Pages reach the first 30 of these patients" in html
    last = logged_in.get(reverse("patients:list"), {"page": 2}).context["page"]
    assert len(last.object_list) == 5

    settings.PATIENT_LIST_COUNT_CAP = 32  # exactly as many as there are: exact
    html = logged_in.get(reverse("patients:list")).content.decode()
    assert "Page 1 of 2 · 32 patients" in html
    assert "Pages reach the first" not in html


@pytest.mark.parametrize("query", ["nunez", "ZOE", "zo nu", "(512) 555-0142", "03/07/1984"])
def test_it_searches_from_the_list_page(logged_in, north, north_patient, south, query):
    north_patient.mobile_phone = "+15125550142"
    north_patient.date_of_birth = dt.date(1984, 3, 7)
    north_patient.save()
    twin = PatientFactory(
        home_location=south,
        first_name="Zoë",
        last_name="Núñez",
        mobile_phone="+15125550142",
        date_of_birth=dt.date(1984, 3, 7),
    )
    response = logged_in.get(reverse("patients:list"), {"q": query})
    assert list(response.context["page"].object_list) == [north_patient]
    assert reverse("patients:detail", args=[twin.pk]) not in response.content.decode()


def test_it_says_when_nothing_matches(logged_in, north_patient):
    response = logged_in.get(reverse("patients:list"), {"q": "nobody-like-this"})
    assert "No patient matches “nobody-like-this”" in response.content.decode()


def test_it_answers_htmx_searches_with_the_results_only(logged_in, north_patient):
    response = logged_in.get(reverse("patients:list"), {"q": "nunez"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "<html" not in html
    assert "Núñez" in html


def test_it_ignores_a_location_filter_for_a_location_the_user_lacks(
    logged_in, north_patient, south, south_patient
):
    response = logged_in.get(reverse("patients:list"), {"location": south.pk})
    assert response.context["location"] is None
    assert list(response.context["page"].object_list) == [north_patient]


def test_it_ignores_an_unknown_status_filter(logged_in, north_patient):
    response = logged_in.get(reverse("patients:list"), {"status": "'; drop table"})
    assert list(response.context["page"].object_list) == [north_patient]


# --- the patient page ---------------------------------------------------------------


def test_it_shows_preferred_channel_and_consent_first(logged_in, north_patient, front_desk):
    ChannelConsentFactory(patient=north_patient, channel="sms", recorded_by=front_desk)
    ChannelConsentFactory(patient=north_patient, channel="email", status="refused")
    html = logged_in.get(north_patient.get_absolute_url()).content.decode()
    assert 'data-testid="preferred-channel">SMS<' in html
    assert html.index("preferred-channel") < html.index("contact-heading")
    assert "Consented" in html
    assert "Refused" in html
    assert f"by {front_desk.get_full_name()}" in html


def test_it_shows_why_a_patient_may_not_be_contacted(logged_in, north_patient):
    north_patient.do_not_contact = True
    north_patient.do_not_contact_reason = "Asked us to stop"
    north_patient.save()
    html = logged_in.get(north_patient.get_absolute_url()).content.decode()
    assert "Do not contact: Asked us to stop" in html


def test_it_shows_only_household_members_the_user_may_see(logged_in, north, south, north_patient):
    household = HouseholdFactory()
    sibling = PatientFactory(home_location=north, household=household, first_name="Ada")
    cousin = PatientFactory(home_location=south, household=household, first_name="Secret")
    north_patient.household = household
    north_patient.save()
    html = logged_in.get(north_patient.get_absolute_url()).content.decode()
    assert sibling.get_absolute_url() in html
    assert cousin.get_absolute_url() not in html
    assert "Secret" not in html


def test_it_does_not_name_a_household_contact_the_user_may_not_see(
    logged_in, north, south, north_patient
):
    household = HouseholdFactory()
    parent = PatientFactory(
        home_location=south, household=household, first_name="Hidden", last_name="Quist"
    )
    household.primary_contact = parent
    household.save()
    north_patient.household = household
    north_patient.save()
    html = logged_in.get(north_patient.get_absolute_url()).content.decode()
    assert "Hidden" not in html
    assert "Quist" not in html
    assert "reminders go to <strong>a member at another location</strong>" in html


def test_it_names_a_household_contact_the_user_may_see(logged_in, north, north_patient):
    household = HouseholdFactory()
    parent = PatientFactory(
        home_location=north, household=household, first_name="Visible", last_name="Quist"
    )
    household.primary_contact = parent
    household.save()
    north_patient.household = household
    north_patient.save()
    html = logged_in.get(north_patient.get_absolute_url()).content.decode()
    assert f"reminders go to <strong>{parent.display_name}</strong>" in html


def test_it_shows_the_timeline_with_changes_and_who_made_them(logged_in, north_patient, front_desk):
    url = reverse("patients:preferences", args=[north_patient.pk])
    logged_in.post(
        url,
        {
            "preferred_channel": "email",
            "language": "en",
            "sms_consent": "",
            "email_consent": "granted",
            "call_consent": "",
            "consent_method": "verbal",
            "do_not_contact_reason": "",
        },
    )
    html = logged_in.get(north_patient.get_absolute_url()).content.decode()
    assert "Patient record changed by" in html
    assert front_desk.get_full_name() in html
    assert "<del>SMS</del> → <ins>Email</ins>" in html
    assert "Email consent created by" in html


def test_it_names_the_records_a_change_points_to(logged_in, north_patient, south):
    logged_in.post(reverse("patients:household", args=[north_patient.pk]), {"create": "1"})
    consent = ChannelConsentFactory(patient=north_patient, recorded_by=UserFactory())
    consent.status, consent.recorded_by = "refused", UserFactory(username="second")
    consent.save()
    html = logged_in.get(north_patient.get_absolute_url()).content.decode()
    assert "<ins>Núñez household</ins>" in html
    assert "<ins>second</ins>" in html


def test_it_pages_the_timeline_with_htmx(logged_in, north_patient):
    start = dt.datetime(2024, 1, 1, 15, tzinfo=dt.UTC)
    for i in range(40):
        AppointmentFactory(patient=north_patient, start=start + dt.timedelta(days=i))
    page = logged_in.get(north_patient.get_absolute_url())
    cursor = page.context["next_cursor"]
    assert cursor is not None
    more = logged_in.get(
        reverse("patients:timeline", args=[north_patient.pk]), {"before": cursor.isoformat()}
    )
    assert more.status_code == 200
    assert "<html" not in more.content.decode()
    assert all(item.when < cursor for item in more.context["timeline"])


def test_it_ignores_a_malformed_timeline_cursor(logged_in, north_patient):
    url = reverse("patients:timeline", args=[north_patient.pk])
    assert logged_in.get(url, {"before": "yesterday"}).status_code == 200
    assert logged_in.get(url, {"before": "2024-01-01T00:00:00"}).status_code == 200


# --- edits through the pages ---------------------------------------------------------


def test_it_shows_the_edit_form_on_get_and_changes_nothing(logged_in, north_patient):
    before = Patient.objects.filter(pk=north_patient.pk).values().get()
    for name in ("edit", "preferences", "household"):
        response = logged_in.get(reverse(f"patients:{name}", args=[north_patient.pk]))
        assert response.status_code == 200
        assert '<form method="post"' in response.content.decode()
    assert Patient.objects.filter(pk=north_patient.pk).values().get() == before
    assert north_patient.consents.count() == 0


def test_it_edits_contact_details(logged_in, north_patient, north, south):
    url = reverse("patients:edit", args=[north_patient.pk])
    data = {
        "first_name": "Zoey",
        "last_name": north_patient.last_name,
        "preferred_name": "",
        "date_of_birth": north_patient.date_of_birth.isoformat(),
        "status": "active",
        "mobile_phone": "512 867 5309",
        "home_phone": "",
        "email": "zoey@example.test",
        "home_location": north.pk,
    }
    north_patient.shared_with.add(south)  # shared elsewhere: kept, the user holds no role there
    response = logged_in.post(url, data)
    assert response.status_code == 302
    north_patient.refresh_from_db()
    assert (north_patient.first_name, north_patient.mobile_phone) == ("Zoey", "+15128675309")
    assert list(north_patient.shared_with.all()) == [south]


def test_it_joins_an_existing_household(logged_in, north, north_patient):
    household = HouseholdFactory()
    PatientFactory(home_location=north, household=household)
    url = reverse("patients:household", args=[north_patient.pk])
    response = logged_in.post(url, {"household": household.pk, "is_primary": "on"})
    assert response.status_code == 302
    household.refresh_from_db()
    assert household.primary_contact == north_patient


def test_it_refuses_a_household_the_user_cannot_see(logged_in, south, north_patient):
    theirs = HouseholdFactory()
    PatientFactory(home_location=south, household=theirs)
    url = reverse("patients:household", args=[north_patient.pk])
    response = logged_in.post(url, {"household": theirs.pk})
    assert response.status_code == 200
    assert "household" in response.context["form"].errors
    north_patient.refresh_from_db()
    assert north_patient.household is None


def test_it_records_an_appointment_with_a_provider(logged_in, north, north_patient):
    provider = ProviderFactory(locations=[north])
    visit = AppointmentFactory(patient=north_patient).appointment_type
    url = reverse("patients:appointment_create", args=[north_patient.pk])
    data = {
        "location": north.pk,
        "appointment_type": visit.pk,
        "provider": provider.pk,
        "date": "2026-06-01",
        "start_time": "14:00",
        "end_time": "15:00",
        "status": "scheduled",
    }
    assert logged_in.post(url, data).status_code == 302
    assert north_patient.appointments.filter(provider=provider).count() == 1


# --- query counts do not grow with rows -------------------------------------------------


def count_queries(client, url: str) -> int:
    # Once unmeasured, so that process-wide caches (content types) are warm for
    # both sizes whatever ran before.
    client.get(url)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def fill_history(patient, n: int) -> None:
    """n appointments at two locations, with providers, and n recorded changes."""
    home = patient.home_location
    provider = ProviderFactory(locations=[home])
    other = GrantFactory(role=Role.FRONT_DESK).location
    start = dt.datetime(2023, 1, 2, 15, tzinfo=dt.UTC)
    for i in range(n):
        AppointmentFactory(
            patient=patient,
            location=home if i % 2 else other,
            provider=provider if i % 3 else None,
            start=start + dt.timedelta(days=7 * i),
            status="completed",
        )
    households = HouseholdFactory.create_batch(2)
    for i in range(n):
        # Alternate a plain field and a foreign key: both kinds of change are shown.
        if i % 2:
            patient.language = "es" if patient.language == "en" else "en"
        else:
            patient.household = households[i % 4 // 2]
        patient.save()
    ChannelConsentFactory(patient=patient)


@pytest.mark.parametrize("search", ["", "a"])
def test_it_lists_patients_in_the_same_number_of_queries_for_10_and_100(
    client, front_desk, north, south, search
):
    client.force_login(front_desk)
    url = reverse("patients:list") + (f"?q={search}" if search else "")
    PatientFactory.create_batch(10, home_location=north, first_name="Ann")
    at_10 = count_queries(client, url)
    batch = PatientFactory.create_batch(90, home_location=north, first_name="Ann")
    for patient in batch[:20]:
        patient.shared_with.add(south)
    at_100 = count_queries(client, url)
    assert at_10 == at_100
    assert at_100 <= 12


def test_it_shows_a_patient_in_the_same_number_of_queries_for_10_and_100_rows(
    client, front_desk, north
):
    client.force_login(front_desk)
    small = PatientFactory(home_location=north)
    large = PatientFactory(home_location=north)
    fill_history(small, 10)
    fill_history(large, 100)
    at_10 = count_queries(client, small.get_absolute_url())
    at_100 = count_queries(client, large.get_absolute_url())
    assert at_10 == at_100
    assert at_100 <= 25
    timeline_10 = count_queries(client, reverse("patients:timeline", args=[small.pk]))
    timeline_100 = count_queries(client, reverse("patients:timeline", args=[large.pk]))
    assert timeline_10 == timeline_100
