"""Admins manage locations, reference data, staff and role grants in the Django admin."""

import pytest
from django.urls import reverse

from locations.access import locations_for
from locations.models import LocationGrant, Role
from patients.models import AppointmentType
from tests.factories import UserFactory, staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user(north):
    return staff(Role.ADMIN, north, username="boss", is_staff=True, is_superuser=True)


@pytest.mark.parametrize(
    "url",
    [
        "admin:locations_location_changelist",
        "admin:locations_location_add",
        "admin:locations_locationgrant_changelist",
        "admin:patients_appointmenttype_add",
        "admin:patients_provider_add",
        "admin:auth_user_changelist",
        "admin:auditlog_logentry_changelist",
    ],
)
def test_it_opens_the_admin_pages_for_an_admin(client, admin_user, url):
    client.force_login(admin_user)
    assert client.get(reverse(url)).status_code == 200


def test_it_grants_a_role_at_a_location_from_the_staff_page(client, admin_user, north):
    newcomer = UserFactory(username="newcomer", first_name="New", last_name="Comer")
    client.force_login(admin_user)
    url = reverse("admin:auth_user_change", args=[newcomer.pk])
    page = client.get(url)
    assert "roles at locations" in page.content.decode()
    assert "user_permissions" not in page.content.decode()

    response = client.post(
        url,
        {
            "username": "newcomer",
            "first_name": "New",
            "last_name": "Comer",
            "email": "",
            "is_active": "on",
            "location_grants-TOTAL_FORMS": "1",
            "location_grants-INITIAL_FORMS": "0",
            "location_grants-0-location": north.pk,
            "location_grants-0-role": Role.FRONT_DESK,
        },
    )

    assert response.status_code == 302, response.context["adminform"].errors
    assert LocationGrant.objects.filter(user=newcomer, location=north).exists()
    assert list(locations_for(newcomer)) == [north]


def test_it_creates_an_appointment_type(client, admin_user):
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:patients_appointmenttype_add"),
        {
            "name": "Night guard fitting",
            "code": "night-guard",
            "default_duration_minutes": 30,
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    assert AppointmentType.objects.filter(code="night-guard").exists()


def test_it_keeps_staff_without_admin_access_out(client, north):
    client.force_login(staff(Role.PRACTICE_MANAGER, north, username="mgr"))
    response = client.get(reverse("admin:locations_location_changelist"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))
