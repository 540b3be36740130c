"""The words of messages: placeholders, SMS segments, defaults, language fallback."""

import datetime as dt

import pytest

from reminders.models import MessageTemplate
from reminders.templating import (
    DEFAULTS,
    TemplateError,
    check_placeholders,
    gsm_friendly,
    render,
    sms_segments,
    validate_template,
)
from tests.factories import LocationFactory, PatientFactory


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # extension characters cost two septets
        ("€" * 81, 2),
        ("á" * 70, 1),  # outside GSM-7: UCS-2, 70 then 67 a part
        ("á" * 71, 2),
        ("é" * 160, 1),  # é is in the GSM alphabet
    ],
)
def test_sms_segments_count_like_carriers(text, parts):
    assert sms_segments(text) == parts


def test_typographic_punctuation_is_sent_as_gsm():
    assert (
        gsm_friendly("Riverside Dental — Austin’s “best”") == 'Riverside Dental - Austin\'s "best"'
    )
    assert sms_segments(gsm_friendly("—" + "a" * 150)) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Hi {diagnosis}", "{diagnosis} is not a placeholder you can use"),
        ("Hi {first_name", "A brace is not closed"),
        ("Dr {provider.specialty}", "{provider.specialty} is not a placeholder"),
    ],
)
def test_only_allow_listed_placeholders(text, message):
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        check_placeholders(text)


@pytest.mark.django_db
def test_every_default_fits_two_sms_with_long_names_and_places():
    LocationFactory(
        name="Riverside Family & Cosmetic Dentistry — North Austin",
        address_line1="12345 North Lamar Boulevard, Suite 300",
        city="Austin",
    )
    PatientFactory(first_name="Maximiliano-Alejandro")
    for (kind, channel, language), (subject, body) in DEFAULTS.items():
        validate_template(
            kind=kind, channel=channel, language=language, location=None, subject=subject, body=body
        )


@pytest.mark.django_db
def test_a_long_sms_is_refused_with_the_number_of_parts():
    location = LocationFactory()
    with pytest.raises(TemplateError, match="3 parts"):
        validate_template(
            kind="recall",
            channel="sms",
            language="en",
            location=location,
            subject="",
            body="{first_name} " + "x" * 300,
        )


@pytest.mark.django_db
def test_a_location_override_beats_the_default_and_a_missing_language_falls_back_to_english():
    location = LocationFactory(name="North", phone="+15125550100")
    MessageTemplate.objects.create(
        kind="recall", channel="sms", language="en", location=location, body="{location_name} hi"
    )
    ours = render(kind="recall", channel="sms", language="en", location=location, first_name="Ana")
    assert ours.body == "North hi"
    other = LocationFactory(name="South")
    vietnamese = render(
        kind="recall", channel="sms", language="vi", location=other, first_name="Lan"
    )
    assert vietnamese.body.startswith("South: Hi Lan, it's time to book")
    spanish = render(
        kind="appointment_reminder",
        channel="sms",
        language="es",
        location=other,
        first_name="Ana",
        when=dt.datetime(2027, 1, 20, 19, 15, tzinfo=dt.UTC),
    )
    assert "el 20/01/2027 a las 13:15" in spanish.body  # Chicago's clock
