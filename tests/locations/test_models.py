import pytest
from django.core.exceptions import ValidationError

from locations.models import Location

pytestmark = pytest.mark.django_db


def build(**kwargs) -> Location:
    return Location(**{"name": "East", "slug": "east", **kwargs})


def test_it_normalises_the_location_phones_to_e164():
    location = build(phone="(512) 555-0142", sms_from_number="512.867.5309")
    location.full_clean()
    assert location.phone == "+15125550142"
    assert location.sms_from_number == "+15128675309"


def test_it_rejects_a_bad_phone_with_the_reason():
    with pytest.raises(ValidationError) as exc:
        build(phone="555-01").full_clean()
    assert "is not a valid phone number" in str(exc.value.message_dict["phone"])


def test_it_rejects_an_unknown_time_zone():
    with pytest.raises(ValidationError) as exc:
        build(time_zone="Mars/Olympus").full_clean()
    assert "time_zone" in exc.value.message_dict


@pytest.mark.parametrize(
    "hours",
    [["08:00", "18:00"], {"funday": ["08:00", "18:00"]}, {"mon": ["18:00", "08:00"]}],
)
def test_it_rejects_malformed_business_hours(hours):
    with pytest.raises(ValidationError) as exc:
        build(business_hours=hours).full_clean()
    assert "business_hours" in exc.value.message_dict


def test_it_rejects_a_messaging_service_sid_that_is_not_one():
    with pytest.raises(ValidationError) as exc:
        build(sms_messaging_service_sid="PN123").full_clean()
    assert "sms_messaging_service_sid" in exc.value.message_dict


def test_it_gives_the_zoneinfo_of_its_time_zone():
    assert build(time_zone="America/Los_Angeles").tz.key == "America/Los_Angeles"
