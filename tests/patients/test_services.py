"""Writes to patients, their preferences, households and appointments."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError

from patients import services
from patients.models import Appointment, ChannelConsent, Household
from patients.search import fold
from tests.factories import (
    AppointmentFactory,
    ChannelConsentFactory,
    PatientFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def test_it_saves_a_patient_with_its_shared_locations(north, south):
    patient = PatientFactory.build(home_location=north)
    services.patient_save(patient=patient, shared_with=[south], by=None)
    assert list(patient.shared_with.all()) == [south]
    assert patient.search_name == fold(f"{patient.first_name}  {patient.last_name}")


def test_it_keeps_the_search_copies_current(north_patient):
    north_patient.mobile_phone = "+15128675309"
    services.patient_save(patient=north_patient, by=None)
    north_patient.refresh_from_db()
    assert north_patient.search_phones == "15128675309 5128675309"
    assert north_patient.search_name == "zoe nunez"


def test_it_refuses_an_invalid_patient(north):
    patient = PatientFactory.build(home_location=north, email="not an email")
    with pytest.raises(ValidationError):
        services.patient_save(patient=patient, by=None)
    assert patient.pk is None


def test_it_records_consent_with_who_and_when(north_patient):
    by = UserFactory()
    consent = services.consent_set(
        patient=north_patient, channel="sms", status="granted", method="written", by=by
    )
    assert consent is not None
    assert (consent.status, consent.method, consent.recorded_by) == ("granted", "written", by)
    assert consent.recorded_at is not None


def test_it_leaves_an_unchanged_consent_alone(north_patient):
    first = UserFactory()
    recorded = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    ChannelConsentFactory(patient=north_patient, recorded_by=first, recorded_at=recorded)
    services.consent_set(
        patient=north_patient, channel="sms", status="granted", method="verbal", by=UserFactory()
    )
    consent = ChannelConsent.objects.get(patient=north_patient, channel="sms")
    assert (consent.recorded_by, consent.recorded_at) == (first, recorded)


def test_it_rewrites_a_changed_consent(north_patient):
    ChannelConsentFactory(patient=north_patient)
    second = UserFactory()
    services.consent_set(
        patient=north_patient, channel="sms", status="refused", method="verbal", by=second
    )
    consent = ChannelConsent.objects.get(patient=north_patient, channel="sms")
    assert (consent.status, consent.recorded_by) == ("refused", second)


def test_it_clears_a_consent(north_patient):
    ChannelConsentFactory(patient=north_patient)
    result = services.consent_set(
        patient=north_patient, channel="sms", status=None, method="verbal", by=None
    )
    assert result is None
    assert not north_patient.consents.exists()


def test_it_starts_a_household_around_a_patient(north_patient):
    household = services.household_create(patient=north_patient)
    north_patient.refresh_from_db()
    assert north_patient.household == household
    assert household.primary_contact == north_patient
    assert household.name == "Núñez household"


def test_it_moves_a_patient_between_households(north_patient, north):
    old = services.household_create(patient=north_patient)
    new = Household.objects.create(name="Other")
    services.household_set(patient=north_patient, household=new, is_primary=True)
    north_patient.refresh_from_db()
    old.refresh_from_db()
    new.refresh_from_db()
    assert north_patient.household == new
    assert new.primary_contact == north_patient
    # Reminders of the household left behind no longer go to someone who left it.
    assert old.primary_contact is None


def test_it_stops_a_patient_being_the_household_contact(north_patient):
    household = services.household_create(patient=north_patient)
    services.household_set(patient=north_patient, household=household, is_primary=False)
    household.refresh_from_db()
    assert household.primary_contact is None


def test_it_marks_a_staff_appointment_as_manual(north_patient):
    appointment = AppointmentFactory.build(
        patient=north_patient, appointment_type=AppointmentFactory().appointment_type
    )
    appointment.source = Appointment.Source.IMPORT
    services.appointment_save(appointment=appointment, by=None)
    assert appointment.source == Appointment.Source.MANUAL


def test_it_refuses_an_appointment_that_ends_before_it_starts(north_patient):
    appointment = AppointmentFactory(patient=north_patient)
    appointment.end = appointment.start - dt.timedelta(minutes=5)
    with pytest.raises(ValidationError):
        services.appointment_save(appointment=appointment, by=None)
