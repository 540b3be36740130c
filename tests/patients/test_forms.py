"""Validation: clear reasons next to the field, nothing typed is lost, times in local zones."""

import datetime as dt
import re

import pytest
from django.urls import reverse

from locations.access import CHANGE_APPOINTMENTS, CHANGE_PATIENTS, locations_for
from locations.models import Location, Role
from patients.forms import AppointmentForm, PatientForm, PreferencesForm
from patients.models import Appointment, Patient
from tests.factories import (
    AppointmentFactory,
    AppointmentTypeFactory,
    ChannelConsentFactory,
    GrantFactory,
    PatientFactory,
    ProviderFactory,
    staff,
)

pytestmark = pytest.mark.django_db


def field_block(html: str, name: str) -> str:
    """The `_field.html` wrapper of one field: its label, input, help and errors."""
    for block in re.findall(r'<div class="field[^"]*">.*?</div>', html, re.S):
        if f'name="{name}"' in block:
            return block
    raise AssertionError(f"no field {name} in the page")


def patient_data(location: Location, **overrides) -> dict:
    data = {
        "first_name": "Renée",
        "last_name": "Ødegaard",
        "preferred_name": "Ren",
        "date_of_birth": "1990-02-14",
        "status": "active",
        "mobile_phone": "(512) 867-5309",
        "home_phone": "",
        "email": "renee@example.test",
        "address_line1": "12 Elm St",
        "address_line2": "",
        "city": "Austin",
        "region": "TX",
        "postal_code": "78701",
        "home_location": location.pk,
    }
    return {**data, **overrides}


PREFS = {
    "preferred_channel": "sms",
    "language": "en",
    "sms_consent": "granted",
    "email_consent": "",
    "call_consent": "",
    "consent_method": "verbal",
    "do_not_contact_reason": "",
}


def patient_form(user, data, instance=None) -> PatientForm:
    return PatientForm(data, instance=instance, home_locations=locations_for(user, CHANGE_PATIENTS))


# --- phones ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("(512) 555-01", "it has too few digits"),
        ("512 555 01420000", "it has too many digits"),
        ("call me", "it is not a phone number"),
        ("+999 123 4567", "the country code is not valid"),
        ("(555) 555-5555", "no such number exists in its region"),
    ],
)
def test_it_rejects_a_bad_phone_with_the_reason(front_desk, north, typed, reason):
    form = patient_form(front_desk, patient_data(north, mobile_phone=typed))
    assert not form.is_valid()
    assert form.errors["mobile_phone"] == [f"“{typed}” is not a valid phone number: {reason}."]


def test_it_shows_the_phone_error_next_to_the_field(client, front_desk, north):
    client.force_login(front_desk)
    data = patient_data(north, home_phone="(512) 555-01") | PREFS
    response = client.post(reverse("patients:create"), data)
    assert response.status_code == 200
    block = field_block(response.content.decode(), "home_phone")
    assert 'class="field-error"' in block
    assert "“(512) 555-01” is not a valid phone number: it has too few digits." in block
    assert "field-has-error" in block
    assert "field-error" not in field_block(response.content.decode(), "first_name")
    assert not Patient.objects.exists()


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("(512) 867-5309", "+15128675309"),
        ("512.867.5309", "+15128675309"),
        ("1-512-867-5309", "+15128675309"),
        ("+1 512 867 5309", "+15128675309"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_it_stores_phones_as_e164(front_desk, north, typed, stored):
    form = patient_form(front_desk, patient_data(north, mobile_phone=typed, home_phone=typed))
    assert form.is_valid(), form.errors
    assert form.cleaned_data["mobile_phone"] == stored
    assert form.cleaned_data["home_phone"] == stored


def test_it_saves_a_new_patient_with_e164_phone_through_the_page(client, front_desk, north):
    client.force_login(front_desk)
    response = client.post(reverse("patients:create"), patient_data(north) | PREFS)
    patient = Patient.objects.get()
    assert response.status_code == 302
    assert response["Location"] == patient.get_absolute_url()
    assert patient.mobile_phone == "+15128675309"
    consent = patient.consents.get()
    assert (consent.channel, consent.status, consent.recorded_by) == ("sms", "granted", front_desk)


# --- other patient fields ---------------------------------------------------------------


def test_it_rejects_a_birth_date_in_the_future(front_desk, north):
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    form = patient_form(front_desk, patient_data(north, date_of_birth=tomorrow.isoformat()))
    assert form.errors["date_of_birth"] == ["Date of birth cannot be in the future."]


def test_it_rejects_a_birth_year_before_1900(front_desk, north):
    form = patient_form(front_desk, patient_data(north, date_of_birth="1890-01-01"))
    assert form.errors["date_of_birth"] == ["Check the year: it is before 1900."]


def test_it_offers_only_home_locations_where_the_user_may_add_patients(front_desk, north, south):
    GrantFactory(user=front_desk, location=south, role=Role.CARE_STAFF)
    form = patient_form(front_desk, patient_data(south))
    assert list(form.fields["home_location"].queryset) == [north]
    assert "home_location" in form.errors


def test_it_keeps_an_existing_patients_home_elsewhere_on_the_choices(front_desk, north, south):
    shared = PatientFactory(home_location=south)
    shared.shared_with.add(north)
    form = patient_form(front_desk, None, instance=shared)
    assert set(form.fields["home_location"].queryset) == {north, south}


def test_it_drops_the_home_location_from_the_shared_ones(north, south):
    both = staff(Role.FRONT_DESK, north, south, username="both-places")
    form = patient_form(both, patient_data(north) | {"shared_with": [north.pk, south.pk]})
    assert form.is_valid(), form.errors
    assert list(form.cleaned_data["shared_with"]) == [south]


def test_it_refuses_sharing_with_a_location_the_user_holds_no_role_at(front_desk, north, south):
    form = patient_form(front_desk, patient_data(north) | {"shared_with": [south.pk]})
    assert "shared_with" in form.errors


def test_it_keeps_shares_the_user_cannot_change(front_desk, north, south):
    patient = PatientFactory(home_location=north)
    patient.shared_with.add(south)
    data = patient_data(north) | {"shared_with": []}
    form = patient_form(front_desk, data, instance=patient)
    assert form.is_valid(), form.errors
    assert list(form.cleaned_data["shared_with"]) == [south]


# --- communication preferences -------------------------------------------------------------


def prefs_form(patient: Patient, **overrides) -> PreferencesForm:
    return PreferencesForm(PREFS | overrides, patient=patient)


def test_it_needs_a_mobile_number_to_prefer_sms(north):
    patient = PatientFactory(home_location=north, mobile_phone="")
    form = prefs_form(patient, sms_consent="")
    assert form.errors["preferred_channel"] == ["SMS needs a mobile phone number."]


def test_it_needs_an_email_address_to_prefer_email(north):
    patient = PatientFactory(home_location=north, email="")
    form = prefs_form(patient, preferred_channel="email")
    assert form.errors["preferred_channel"] == ["Email needs an email address."]


def test_it_needs_some_phone_to_prefer_calls(north):
    patient = PatientFactory(home_location=north, mobile_phone="", home_phone="")
    form = prefs_form(patient, preferred_channel="call", sms_consent="")
    assert form.errors["preferred_channel"] == ["Phone calls need a mobile or home phone number."]


def test_it_accepts_a_home_phone_for_calls(north):
    patient = PatientFactory(home_location=north, mobile_phone="", home_phone="+15128675309")
    assert prefs_form(patient, preferred_channel="call", sms_consent="").is_valid()


def test_it_refuses_a_preferred_channel_the_patient_refused(north_patient):
    form = prefs_form(north_patient, sms_consent="refused")
    assert form.errors["preferred_channel"] == [
        "The patient refused this channel. Choose another, or record their consent."
    ]


def test_it_needs_a_reason_for_do_not_contact(north_patient):
    form = prefs_form(north_patient, do_not_contact="on", do_not_contact_reason="  ")
    assert form.errors["do_not_contact_reason"] == [
        "Say why, so colleagues know whether it can change."
    ]


def test_it_accepts_do_not_contact_with_a_reason(north_patient):
    assert prefs_form(north_patient, do_not_contact="on", do_not_contact_reason="Asked").is_valid()


def test_it_uses_the_mobile_typed_in_the_same_form_for_sms(client, front_desk, north):
    client.force_login(front_desk)
    client.post(reverse("patients:create"), patient_data(north) | PREFS)
    assert Patient.objects.get().preferred_channel == "sms"


def test_it_shows_preference_errors_next_to_the_field(client, front_desk, north_patient):
    client.force_login(front_desk)
    url = reverse("patients:preferences", args=[north_patient.pk])
    response = client.post(url, PREFS | {"do_not_contact": "on", "sms_consent": "refused"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "The patient refused this channel." in field_block(html, "preferred_channel")
    assert "Say why" in field_block(html, "do_not_contact_reason")
    north_patient.refresh_from_db()
    assert not north_patient.do_not_contact
    assert not north_patient.consents.exists()


def test_it_starts_the_preferences_form_from_the_current_values(north_patient):
    ChannelConsentFactory(patient=north_patient, channel="email", status="refused")
    form = PreferencesForm(patient=north_patient)
    assert form.initial["email_consent"] == "refused"
    assert form.initial["sms_consent"] == ""
    assert form.initial["preferred_channel"] == north_patient.preferred_channel


# --- bad input loses nothing ---------------------------------------------------------------


def test_it_keeps_everything_typed_when_the_form_is_refused(client, front_desk, north):
    client.force_login(front_desk)
    typed = patient_data(north, mobile_phone="(512) 555-01") | PREFS | {"language": "es"}
    html = client.post(reverse("patients:create"), typed).content.decode()
    for name in ("first_name", "last_name", "preferred_name", "email", "address_line1", "city"):
        assert f'value="{typed[name]}"' in field_block(html, name), name
    assert 'value="(512) 555-01"' in field_block(html, "mobile_phone")
    assert 'value="1990-02-14"' in field_block(html, "date_of_birth")
    assert re.search(r'<option value="es" selected>', field_block(html, "language"))
    assert re.search(r'<option value="granted" selected>', field_block(html, "sms_consent"))


def test_it_keeps_the_typed_appointment_when_refused(client, front_desk, north_patient):
    client.force_login(front_desk)
    visit = AppointmentTypeFactory()
    url = reverse("patients:appointment_create", args=[north_patient.pk])
    data = {
        "location": north_patient.home_location_id,
        "appointment_type": visit.pk,
        "provider": "",
        "date": "2026-01-15",
        "start_time": "10:00",
        "end_time": "09:30",
        "status": "confirmed",
    }
    html = client.post(url, data).content.decode()
    assert "The appointment must end after it starts." in field_block(html, "end_time")
    assert 'value="2026-01-15"' in field_block(html, "date")
    assert 'value="10:00"' in field_block(html, "start_time")
    assert 'value="09:30"' in field_block(html, "end_time")
    assert '<option value="confirmed" selected>' in field_block(html, "status")
    assert not north_patient.appointments.exists()


# --- appointments ------------------------------------------------------------------------


def appointment_form(user, patient, **overrides) -> AppointmentForm:
    data = {
        "location": patient.home_location_id,
        "appointment_type": AppointmentTypeFactory().pk,
        "provider": "",
        "date": "2026-01-15",
        "start_time": "09:00",
        "end_time": "09:30",
        "status": "scheduled",
    }
    return AppointmentForm(
        data | overrides,
        instance=Appointment(patient=patient),
        locations=locations_for(user, CHANGE_APPOINTMENTS),
    )


@pytest.mark.parametrize("end", ["08:30", "09:00"])
def test_it_refuses_an_appointment_that_does_not_end_after_it_starts(
    front_desk, north_patient, end
):
    form = appointment_form(front_desk, north_patient, end_time=end)
    assert form.errors["end_time"] == ["The appointment must end after it starts."]


def test_it_refuses_a_provider_who_does_not_work_at_the_location(north, north_patient, south):
    both = staff(Role.FRONT_DESK, north, south, username="both")
    provider = ProviderFactory(name="Dr Away", title="", locations=[south])
    form = appointment_form(both, north_patient, provider=provider.pk)
    assert form.errors["provider"] == ["Dr Away does not work at North Clinic."]


def test_it_offers_only_providers_of_the_users_locations(front_desk, north_patient, north, south):
    here = ProviderFactory(locations=[north])
    ProviderFactory(locations=[south])
    form = appointment_form(front_desk, north_patient)
    assert list(form.fields["provider"].queryset) == [here]


def test_it_accepts_a_provider_of_the_location(front_desk, north_patient, north):
    provider = ProviderFactory(locations=[north])
    assert appointment_form(front_desk, north_patient, provider=provider.pk).is_valid()


@pytest.mark.parametrize(
    ("time_zone", "day", "utc_hour"),
    [
        ("America/Los_Angeles", "2026-01-15", 17),  # PST, UTC-8
        ("America/Los_Angeles", "2026-07-15", 16),  # PDT, UTC-7
        ("America/New_York", "2026-01-15", 14),  # EST, UTC-5
        ("America/Chicago", "2026-03-09", 14),  # the day after DST began: CDT, UTC-5
    ],
)
def test_it_reads_appointment_times_in_the_locations_time_zone(
    client, north, time_zone, day, utc_hour
):
    location = Location.objects.create(name=time_zone, slug=day + time_zone[-4:].lower())
    location.time_zone = time_zone
    location.save()
    patient = PatientFactory(home_location=location)
    user = GrantFactory(location=location, role=Role.FRONT_DESK).user
    client.force_login(user)
    visit = AppointmentTypeFactory()
    url = reverse("patients:appointment_create", args=[patient.pk])
    data = {
        "location": location.pk,
        "appointment_type": visit.pk,
        "provider": "",
        "date": day,
        "start_time": "09:00",
        "end_time": "09:45",
        "status": "scheduled",
    }
    assert client.post(url, data).status_code == 302
    appointment = patient.appointments.get()
    year, month, date = (int(part) for part in day.split("-"))
    assert appointment.start == dt.datetime(year, month, date, utc_hour, tzinfo=dt.UTC)
    assert appointment.end - appointment.start == dt.timedelta(minutes=45)
    assert appointment.local_start.strftime("%H:%M") == "09:00"
    assert appointment.source == Appointment.Source.MANUAL


def test_it_shows_an_existing_appointment_in_its_locations_time(front_desk, south):
    appointment = AppointmentFactory(
        patient=PatientFactory(home_location=south),
        start=dt.datetime(2026, 1, 15, 17, tzinfo=dt.UTC),
    )
    form = AppointmentForm(instance=appointment, locations=Location.objects.all())
    assert form.initial["date"] == dt.date(2026, 1, 15)
    assert form.initial["start_time"] == dt.time(9, 0)
    assert form.initial["end_time"] == dt.time(9, 30)


def test_it_refuses_a_time_that_does_not_exist_when_clocks_spring_forward(front_desk, north):
    north.time_zone = "America/Chicago"
    north.save()
    patient = PatientFactory(home_location=north)
    form = appointment_form(
        front_desk, patient, date="2026-03-08", start_time="02:30", end_time="03:15"
    )
    assert "does not exist on Mar 8, 2026" in form.errors["start_time"][0]
    assert "end_time" not in form.errors


def test_it_accepts_a_visit_spanning_the_spring_forward_hour(front_desk, north):
    north.time_zone = "America/Chicago"
    north.save()
    patient = PatientFactory(home_location=north)
    form = appointment_form(
        front_desk, patient, date="2026-03-08", start_time="01:30", end_time="03:30"
    )
    assert form.is_valid(), form.errors
    # 01:30 CST to 03:30 CDT is one real hour.
    assert form.instance.end - form.instance.start == dt.timedelta(hours=1)
