import pytest
from auditlog.context import auditlog_value

from locations.models import Role
from tests.factories import LocationFactory, PatientFactory, staff


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Hashing with PBKDF2 at full strength would dominate the suite's run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _lazy_static_files(settings):
    # WhiteNoise indexes every static file (the admin's included) whenever a test
    # client builds its middleware, ~30 ms per test; autorefresh looks a file up
    # only when it is requested, and serves it the same way.
    settings.WHITENOISE_AUTOREFRESH = True


@pytest.fixture(autouse=True)
def _fresh_audit_context():
    # auditlog's middleware and set_actor() leave their actor in a context variable
    # after the request or block ends; without this, an actor from an earlier
    # test (whose user row is rolled back) would leak into this one.
    token = auditlog_value.set({})
    yield
    auditlog_value.reset(token)


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
def care_staff(north):
    return staff(Role.CARE_STAFF, north, username="carestaff")


@pytest.fixture
def manager(north):
    return staff(Role.PRACTICE_MANAGER, north, username="manager")


@pytest.fixture
def no_grant(db):
    return staff(Role.FRONT_DESK, username="nogrant")


@pytest.fixture
def north_patient(north):
    return PatientFactory(home_location=north, first_name="Zoë", last_name="Núñez")


@pytest.fixture
def south_patient(south):
    return PatientFactory(home_location=south, first_name="Amara", last_name="Okafor")
