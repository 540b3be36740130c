import pytest

from locations.models import Role
from tests.factories import LocationFactory, PatientFactory, staff


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Hashing with PBKDF2 at full strength would dominate the suite's run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def north(db):
    return LocationFactory(name="North Clinic", slug="north", time_zone="America/New_York")


@pytest.fixture
def south(db):
    return LocationFactory(name="South Clinic", slug="south", time_zone="America/Los_Angeles")


@pytest.fixture
def front_desk(north):
    return staff(Role.FRONT_DESK, north, username="frontdesk")


@pytest.fixture
def north_patient(north):
    return PatientFactory(home_location=north, first_name="Zoë", last_name="Núñez")


@pytest.fixture
def south_patient(south):
    return PatientFactory(home_location=south, first_name="Amara", last_name="Okafor")
