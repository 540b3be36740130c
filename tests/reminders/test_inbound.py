"""Patients' SMS replies: STOP/START for every patient on the number, C confirms."""

import datetime as dt

import pytest
from auditlog.models import LogEntry
from django.urls import reverse
from django.utils import timezone
from twilio.request_validator import RequestValidator

from patients.models import Appointment
from reminders.models import InboundMessage
from tests.factories import AppointmentFactory, PatientFactory

TOKEN = "inbound-token"
URL = reverse("reminders:twilio_inbound")
Action = InboundMessage.Action


@pytest.fixture(autouse=True)
def _twilio_token(settings):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.TWILIO_WEBHOOK_BASE_URL = ""


def sms(client, body: str, *, sid: str, from_number: str, to_number: str = "+15125550100"):
    params = {"MessageSid": sid, "From": from_number, "To": to_number, "Body": body}
    signature = RequestValidator(TOKEN).compute_signature(f"http://testserver{URL}", params)
    return client.post(URL, params, HTTP_X_TWILIO_SIGNATURE=signature)


@pytest.fixture
def household(north):
    north.sms_from_number = "+15125550100"
    north.save()
    parent = PatientFactory(home_location=north, mobile_phone="+15125550142")
    child = PatientFactory(home_location=north, mobile_phone="+15125550142")
    return parent, child


@pytest.mark.django_db
@pytest.mark.parametrize("word", ["STOP", " stop ", "Unsubscribe", "quit", "OPTOUT"])
def test_it_opts_out_every_patient_on_the_number(client, household, word):
    response = sms(client, word, sid="SM1", from_number="+15125550142")
    assert response.status_code == 200
    for patient in household:
        patient.refresh_from_db()
        assert patient.sms_opted_out_at is not None
    assert InboundMessage.objects.get().action == Action.OPT_OUT
    change = LogEntry.objects.filter(
        object_id=household[0].pk,
        action=LogEntry.Action.UPDATE,
        changes__has_key="sms_opted_out_at",
    ).get()
    assert change.actor.username == "system"


@pytest.mark.django_db
def test_it_opts_back_in_on_start_and_acts_once_per_message(client, household):
    sms(client, "STOP", sid="SM1", from_number="+15125550142")
    sms(client, "START", sid="SM2", from_number="+15125550142")
    sms(client, "STOP", sid="SM1", from_number="+15125550142")  # Twilio retried SM1
    for patient in household:
        patient.refresh_from_db()
        assert patient.sms_opted_out_at is None
    assert InboundMessage.objects.count() == 2


@pytest.mark.django_db
def test_it_confirms_the_only_upcoming_visit(client, north):
    north.sms_from_number = "+15125550100"
    north.save()
    patient = PatientFactory(home_location=north, mobile_phone="+15125550177")
    visit = AppointmentFactory(
        patient=patient, start=timezone.now() + dt.timedelta(days=2), status="scheduled"
    )
    sms(client, "c", sid="SM9", from_number="+15125550177")
    visit.refresh_from_db()
    assert visit.status == Appointment.Status.CONFIRMED
    assert InboundMessage.objects.get().confirmed_appointment == visit


@pytest.mark.django_db
def test_it_sends_an_ambiguous_confirmation_to_the_inbox(client, household):
    for patient in household:
        AppointmentFactory(
            patient=patient, start=timezone.now() + dt.timedelta(days=3), status="scheduled"
        )
    sms(client, "Y", sid="SM3", from_number="+15125550142")
    inbound = InboundMessage.objects.get()
    assert inbound.action == Action.INBOX
    assert "Several patients share this number" in inbound.note
    assert not Appointment.objects.filter(status="confirmed").exists()


@pytest.mark.django_db
def test_it_keeps_other_replies_for_staff(client, household):
    sms(client, "Can I come at 4 instead?", sid="SM4", from_number="+15125550142")
    inbound = InboundMessage.objects.get()
    assert inbound.action == Action.INBOX
    assert set(inbound.patients.all()) == set(household)


@pytest.mark.django_db
def test_it_refuses_an_unsigned_inbound_message(client, household):
    params = {"MessageSid": "SM5", "From": "+15125550142", "To": "+15125550100", "Body": "STOP"}
    assert client.post(URL, params).status_code == 403
    assert not InboundMessage.objects.exists()
