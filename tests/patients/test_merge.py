"""The patient merge tool: the service (what moves, what wins) and its pages."""

import datetime as dt

import pytest
from auditlog.models import LogEntry
from django.urls import reverse
from django.utils import timezone

from followups.models import Followup
from locations.models import Role
from patients.merge import MergeRefused, patient_merge
from patients.models import ChannelConsent, ExternalIdentifier, Patient
from patients.selectors import patient_list, patients_visible_to
from reminders.models import InboundMessage, OutboundMessage, ReminderSchedule
from tests.factories import (
    AppointmentFactory,
    ChannelConsentFactory,
    ContactAttemptFactory,
    FollowupFactory,
    FollowupTypeFactory,
    GrantFactory,
    HouseholdFactory,
    OutboundMessageFactory,
    PatientFactory,
    staff,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def survivor(north):
    return PatientFactory(
        home_location=north,
        first_name="Maria",
        last_name="Lopez",
        date_of_birth=dt.date(1980, 4, 2),
        mobile_phone="+15125550101",
        home_phone="",
        email="",
    )


@pytest.fixture
def duplicate(north):
    return PatientFactory(
        home_location=north,
        first_name="María",
        last_name="López",
        date_of_birth=dt.date(1980, 4, 2),
        mobile_phone="+15125550199",
        home_phone="+15125550177",
        email="maria@example.test",
        address_line1="12 Elm St",
        city="Austin",
    )


def merge_entry(patient: Patient) -> LogEntry:
    entries = LogEntry.objects.filter(
        additional_data__patient_id=patient.pk, changes__has_any_keys=["merged in", "merged into"]
    )
    assert entries.count() == 1
    return entries.get()


# --- the service ---------------------------------------------------------------------


def test_it_moves_everything_to_the_survivor(survivor, duplicate, front_desk, south):
    appointment = AppointmentFactory(patient=duplicate)
    followup = FollowupFactory(patient=duplicate, status=Followup.Status.DONE)
    attempt = ContactAttemptFactory(followup=followup)
    message = OutboundMessageFactory(patient=duplicate, recipient=duplicate)
    reply = InboundMessage.objects.create(
        provider_id="SMmerge1",
        from_number=duplicate.mobile_phone,
        to_number="+15125550100",
        action=InboundMessage.Action.INBOX,
        received_at=timezone.now(),
    )
    reply.patients.add(duplicate)
    duplicate.discharges.create(location=duplicate.home_location, discharged_on=dt.date(2026, 1, 5))
    duplicate.shared_with.add(south)

    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)

    appointment.refresh_from_db()
    followup.refresh_from_db()
    attempt.refresh_from_db()
    message.refresh_from_db()
    assert appointment.patient == survivor
    assert followup.patient == survivor
    assert attempt.followup.patient == survivor
    assert (message.patient, message.recipient) == (survivor, survivor)
    assert list(reply.patients.all()) == [survivor]
    assert survivor.discharges.count() == 1
    assert south in survivor.shared_with.all()
    duplicate.refresh_from_db()
    assert duplicate.merged_into == survivor
    assert duplicate.status == Patient.Status.INACTIVE


def test_it_closes_the_duplicates_active_followup_of_a_type_the_survivor_has(
    survivor, duplicate, front_desk
):
    recall = FollowupTypeFactory(code="hygiene-recall", name="Hygiene recall")
    exam = FollowupTypeFactory(code="exam", name="Exam")
    kept = FollowupFactory(patient=survivor, followup_type=recall)
    clash = FollowupFactory(patient=duplicate, followup_type=recall)
    other = FollowupFactory(patient=duplicate, followup_type=exam)

    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)

    for f in (kept, clash, other):
        f.refresh_from_db()
    assert kept.status == Followup.Status.OPEN
    assert clash.status == Followup.Status.DISMISSED
    assert clash.dismissed_reason == f"Merged into Maria Lopez (#{survivor.pk})"
    assert clash.patient == survivor  # history moves too, closed
    assert other.status == Followup.Status.OPEN and other.patient == survivor
    assert "Hygiene recall" in merge_entry(survivor).changes["follow-ups closed as duplicates"][0]


def test_it_keeps_the_more_recent_consent_per_channel(survivor, duplicate, front_desk):
    now = timezone.now()
    ChannelConsentFactory(
        patient=survivor, channel="sms", status="granted", recorded_at=now - dt.timedelta(days=90)
    )
    ChannelConsentFactory(patient=duplicate, channel="sms", status="refused", recorded_at=now)
    ChannelConsentFactory(patient=survivor, channel="email", status="granted", recorded_at=now)
    ChannelConsentFactory(
        patient=duplicate,
        channel="email",
        status="refused",
        recorded_at=now - dt.timedelta(days=9),
    )
    ChannelConsentFactory(patient=duplicate, channel="call", status="granted", recorded_at=now)

    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)

    consents = {c.channel: c.status for c in survivor.consents.all()}
    assert consents == {"sms": "refused", "email": "granted", "call": "granted"}
    assert not ChannelConsent.objects.filter(patient=duplicate).exists()
    noted = merge_entry(survivor).changes["consent"][0]
    assert "SMS: the other record's, more recent (refused" in noted
    assert "Email: kept this record's (consented" in noted
    assert "older one (refused" in noted


def test_it_fills_only_empty_contact_fields(survivor, duplicate, front_desk):
    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)

    survivor.refresh_from_db()
    assert survivor.mobile_phone == "+15125550101"  # never overwritten
    assert survivor.home_phone == "+15125550177"
    assert survivor.email == "maria@example.test"
    assert (survivor.address_line1, survivor.city) == ("12 Elm St", "Austin")
    filled = merge_entry(survivor).changes["filled from the other record"][0]
    assert filled == "home phone, email, address"


def test_it_keeps_a_refusal_from_either_record(survivor, duplicate, front_desk):
    stopped = timezone.now() - dt.timedelta(days=3)
    Patient.objects.filter(pk=duplicate.pk).update(
        do_not_contact=True, do_not_contact_reason="Asked by phone", sms_opted_out_at=stopped
    )

    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)

    survivor.refresh_from_db()
    assert survivor.do_not_contact and survivor.do_not_contact_reason == "Asked by phone"
    assert survivor.sms_opted_out_at == stopped


def test_it_keeps_both_external_ids_of_one_system(survivor, duplicate, front_desk):
    ExternalIdentifier.objects.create(patient=survivor, system="ehr_mrn", value="A-1")
    ExternalIdentifier.objects.create(patient=duplicate, system="ehr_mrn", value="B-2")
    ExternalIdentifier.objects.create(patient=duplicate, system="scheduler", value="77")

    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)

    assert set(survivor.external_ids.values_list("system", "value")) == {
        ("ehr_mrn", "A-1"),
        ("ehr_mrn", "B-2"),
        ("scheduler", "77"),
    }


def test_it_takes_the_duplicates_household_when_the_survivor_has_none(
    survivor, duplicate, front_desk
):
    household = HouseholdFactory(primary_contact=duplicate)
    Patient.objects.filter(pk=duplicate.pk).update(household=household)
    duplicate.refresh_from_db()

    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)

    survivor.refresh_from_db()
    household.refresh_from_db()
    duplicate.refresh_from_db()
    assert survivor.household == household
    assert household.primary_contact == survivor
    assert duplicate.household is None


def test_it_keeps_the_survivors_household(survivor, duplicate, front_desk):
    mine, theirs = HouseholdFactory(), HouseholdFactory(primary_contact=duplicate)
    Patient.objects.filter(pk=survivor.pk).update(household=mine)
    Patient.objects.filter(pk=duplicate.pk).update(household=theirs)

    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)

    survivor.refresh_from_db()
    theirs.refresh_from_db()
    assert survivor.household == mine
    assert theirs.primary_contact is None


def test_it_writes_one_merge_entry_on_each_record_and_audits_each_move(
    survivor, duplicate, front_desk
):
    appointment = AppointmentFactory(patient=duplicate)
    ExternalIdentifier.objects.create(patient=duplicate, system="ehr_mrn", value="B-2")

    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)

    on_survivor, on_duplicate = merge_entry(survivor), merge_entry(duplicate)
    assert on_survivor.actor == front_desk and on_duplicate.actor == front_desk
    assert on_survivor.changes["merged in"][0].startswith(f"María López (record #{duplicate.pk}")
    assert on_survivor.changes["moved"] == ["1 appointment, 1 external id"]
    assert on_duplicate.changes["merged into"] == [f"Maria Lopez (record #{survivor.pk})"]
    moved = LogEntry.objects.get_for_object(appointment).get(action=LogEntry.Action.UPDATE)
    assert moved.changes["patient"] == [str(duplicate.pk), str(survivor.pk)]
    marked = LogEntry.objects.get_for_object(duplicate).filter(
        action=LogEntry.Action.UPDATE, changes__has_key="merged_into"
    )
    assert marked.count() == 1


def test_it_points_earlier_merges_at_the_new_survivor(survivor, duplicate, front_desk, north):
    older = PatientFactory(home_location=north)
    patient_merge(survivor=duplicate, duplicate=older, by=front_desk)
    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)
    older.refresh_from_db()
    assert older.merged_into == survivor


def test_it_refuses_a_record_already_merged_or_itself(survivor, duplicate, front_desk):
    with pytest.raises(MergeRefused):
        patient_merge(survivor=survivor, duplicate=survivor, by=front_desk)
    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)
    with pytest.raises(MergeRefused):
        patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)


def test_it_replans_the_survivors_reminders(survivor, duplicate, front_desk, north):
    north.module_appointment_reminders = True
    north.sms_from_number = "+15125550100"
    north.save()
    ReminderSchedule.objects.create(
        location=north, steps=[{"minutes_before": 60, "channel": "sms"}]
    )
    # Only the survivor consented to SMS: the duplicate's reminder was held back.
    ChannelConsentFactory(patient=survivor, channel="sms")
    # Midday on a Wednesday in New York: the reminder an hour before is in open hours.
    now = timezone.now()
    day = now + dt.timedelta(days=7 + (2 - now.weekday()) % 7)
    start = day.replace(hour=16, minute=0, second=0, microsecond=0)
    appointment = AppointmentFactory(
        patient=duplicate, start=start, end=start + dt.timedelta(minutes=30)
    )
    pending = OutboundMessage.objects.get(appointment=appointment)
    assert pending.status == OutboundMessage.Status.SUPPRESSED

    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)

    pending.refresh_from_db()
    assert pending.patient == survivor
    assert (pending.status, pending.to, pending.reason) == ("planned", survivor.mobile_phone, "")


def test_it_hides_the_merged_record_from_lists_and_search(survivor, duplicate, front_desk):
    patient_merge(survivor=survivor, duplicate=duplicate, by=front_desk)

    assert list(patients_visible_to(front_desk)) == [survivor]
    assert list(patient_list(user=front_desk, query="lopez")) == [survivor]
    assert list(patient_list(user=front_desk, query="1980-04-02")) == [survivor]


# --- the pages -----------------------------------------------------------------------


@pytest.fixture
def logged_in(client, front_desk):
    client.force_login(front_desk)
    return client


def test_it_offers_the_merge_action_only_to_those_who_may_change_the_patient(
    client, survivor, front_desk, care_staff
):
    url = reverse("patients:detail", args=[survivor.pk])
    merge = reverse("patients:merge", args=[survivor.pk])
    client.force_login(front_desk)
    assert merge in client.get(url).content.decode()
    client.force_login(care_staff)
    assert merge not in client.get(url).content.decode()


def test_it_searches_for_the_other_record(logged_in, survivor, duplicate, south_patient):
    PatientFactory(home_location=south_patient.home_location, last_name="López")
    response = logged_in.get(reverse("patients:merge", args=[survivor.pk]), {"q": "lopez"})
    assert response.status_code == 200
    assert response.context["candidates"] == [duplicate]


def test_it_compares_both_records_side_by_side(logged_in, survivor, duplicate):
    AppointmentFactory(patient=duplicate)
    ExternalIdentifier.objects.create(patient=duplicate, system="ehr_mrn", value="B-2")
    url = reverse("patients:merge", args=[survivor.pk])
    response = logged_in.get(url, {"other": duplicate.pk})
    html = response.content.decode()
    assert response.status_code == 200
    assert [side.appointments for side in response.context["sides"]] == [0, 1]
    assert "B-2" in html and "maria@example.test" in html
    assert f'value="{survivor.pk}"' in html and f'value="{duplicate.pk}"' in html
    assert Patient.objects.filter(merged_into__isnull=False).count() == 0


def test_it_merges_into_the_chosen_record(logged_in, survivor, duplicate):
    url = reverse("patients:merge", args=[survivor.pk])
    response = logged_in.post(url, {"other": duplicate.pk, "survivor": duplicate.pk})
    assert response.status_code == 302
    assert response["Location"] == reverse("patients:detail", args=[duplicate.pk])
    survivor.refresh_from_db()
    assert survivor.merged_into == duplicate
    page = logged_in.get(response["Location"]).content.decode()
    assert "was merged into this record" in page
    assert f"Maria Lopez (record #{survivor.pk}" in page  # the merge entry on the timeline


def test_it_sends_the_merged_records_address_to_the_survivor(logged_in, survivor, duplicate):
    logged_in.post(
        reverse("patients:merge", args=[survivor.pk]),
        {"other": duplicate.pk, "survivor": survivor.pk},
    )
    response = logged_in.get(reverse("patients:detail", args=[duplicate.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("patients:detail", args=[survivor.pk])
    assert logged_in.get(reverse("patients:edit", args=[duplicate.pk])).status_code == 404


def test_it_asks_which_record_stays(logged_in, survivor, duplicate):
    url = reverse("patients:merge", args=[survivor.pk])
    response = logged_in.post(url, {"other": duplicate.pk})
    assert response.status_code == 200
    assert "Choose the record that stays." in response.content.decode()
    assert not Patient.objects.filter(merged_into__isnull=False).exists()


def test_it_refuses_a_merge_with_a_record_of_another_location(logged_in, survivor, south_patient):
    url = reverse("patients:merge", args=[survivor.pk])
    assert logged_in.get(url, {"other": south_patient.pk}).status_code == 404
    body = {"other": south_patient.pk, "survivor": survivor.pk}
    assert logged_in.post(url, body).status_code == 404
    url = reverse("patients:merge", args=[south_patient.pk])
    assert logged_in.post(url, {"other": survivor.pk, "survivor": survivor.pk}).status_code == 404
    assert not Patient.objects.filter(merged_into__isnull=False).exists()


def test_it_needs_change_rights_on_both_records(client, north, south, survivor, south_patient):
    # Sees South's patient, but may change only North's: no merge across.
    user = staff(Role.FRONT_DESK, north, username="both")
    GrantFactory(user=user, location=south, role=Role.CARE_STAFF)
    client.force_login(user)
    url = reverse("patients:merge", args=[survivor.pk])
    assert client.get(reverse("patients:detail", args=[south_patient.pk])).status_code == 200
    body = {"other": south_patient.pk, "survivor": survivor.pk}
    assert client.post(url, body).status_code == 404
    assert not Patient.objects.filter(merged_into__isnull=False).exists()
