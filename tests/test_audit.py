"""The audit trail: every write and every look at a patient, with who and from where."""

import datetime as dt

import pytest
from auditlog.context import set_actor
from auditlog.models import LogEntry
from celery import shared_task
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse
from guardian.models import UserObjectPermission

from locations.models import LocationGrant, Role
from patients import services
from patients.models import Appointment, ChannelConsent, Patient
from practicecrm.audit import (
    bulk_create_audited,
    get_system_user,
    system_actor,
    update_audited,
)
from tests.factories import (
    AppointmentFactory,
    ChannelConsentFactory,
    GrantFactory,
    PatientFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

C, U, D, A = (
    LogEntry.Action.CREATE,
    LogEntry.Action.UPDATE,
    LogEntry.Action.DELETE,
    LogEntry.Action.ACCESS,
)


def entries_for(obj, action=None):
    qs = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(obj), object_pk=str(obj.pk)
    )
    if action is not None:
        qs = qs.filter(action=action)
    return list(qs.order_by("timestamp", "pk"))


# --- every model, create/update/delete ------------------------------------------------


def test_it_records_patient_create_update_delete(north):
    patient = PatientFactory(home_location=north, first_name="Ann")
    patient.first_name = "Anne"
    patient.save()
    pk = patient.pk
    patient.delete()
    patient.pk = pk
    actions = [e.action for e in entries_for(patient)]
    assert actions == [C, U, D]
    update = entries_for(patient, U)[0]
    assert update.changes_dict["first_name"] == ["Ann", "Anne"]
    assert update.additional_data == {"patient_id": pk}


def test_it_records_consent_changes_with_the_patient_id(north_patient):
    consent = ChannelConsentFactory(patient=north_patient)
    services.consent_set(
        patient=north_patient, channel="sms", status="refused", method="verbal", by=None
    )
    services.consent_set(
        patient=north_patient, channel="sms", status=None, method="verbal", by=None
    )
    entries = entries_for(consent)
    assert [e.action for e in entries] == [C, U, D]
    assert entries[1].changes_dict["status"] == ["granted", "refused"]
    assert all(e.additional_data == {"patient_id": north_patient.pk} for e in entries)


def test_it_records_appointment_changes(north_patient):
    appointment = AppointmentFactory(patient=north_patient)
    appointment.status = Appointment.Status.NO_SHOW
    appointment.save()
    pk = appointment.pk
    appointment.delete()
    appointment.pk = pk
    entries = entries_for(appointment)
    assert [e.action for e in entries] == [C, U, D]
    assert entries[1].changes_dict == {"status": ["scheduled", "no_show"]}


def test_it_records_grants_and_the_permission_rows_behind_them(north):
    user = UserFactory()
    grant = GrantFactory(user=user, location=north, role=Role.CARE_STAFF)
    grant.role = Role.FRONT_DESK
    grant.save()
    pk = grant.pk
    grant.delete()
    grant.pk = pk
    assert [e.action for e in entries_for(grant)] == [C, U, D]
    perms = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(UserObjectPermission)
    )
    # care staff: view (+1); front desk: change patients, change appointments (+2);
    # grant deleted: all three rows removed (-3)
    assert perms.filter(action=C).count() == 3
    assert perms.filter(action=D).count() == 3
    assert not UserObjectPermission.objects.filter(user=user).exists()


def test_it_records_sharing_a_patient_with_another_location(north_patient, south):
    north_patient.shared_with.add(south)
    north_patient.shared_with.remove(south)
    entries = entries_for(north_patient, U)
    assert [e.changes_dict["shared_with"]["operation"] for e in entries] == ["add", "delete"]
    assert entries[0].changes_dict["shared_with"]["objects"] == [str(south)]
    assert entries[0].additional_data == {"patient_id": north_patient.pk}


# --- who and from where -----------------------------------------------------------------


def test_it_records_the_user_and_address_of_a_request(client, front_desk, north_patient):
    client.force_login(front_desk)
    url = reverse("patients:preferences", args=[north_patient.pk])
    response = client.post(
        url,
        {
            "preferred_channel": "email",
            "language": "en",
            "sms_consent": "granted",
            "email_consent": "",
            "call_consent": "",
            "consent_method": "written",
            "do_not_contact_reason": "",
        },
        REMOTE_ADDR="203.0.113.7",
    )
    assert response.status_code == 302
    update = entries_for(north_patient, U)[-1]
    consent = entries_for(ChannelConsent.objects.get(patient=north_patient), C)[0]
    for entry in (update, consent):
        assert entry.actor == front_desk
        assert entry.remote_addr == "203.0.113.7"
    assert update.changes_dict["preferred_channel"] == ["sms", "email"]


def test_it_records_the_connecting_address_not_one_the_client_claims(
    client, front_desk, north_patient
):
    # No proxy is configured, so a forwarded-for header is only the client's word.
    client.force_login(front_desk)
    client.get(
        north_patient.get_absolute_url(),
        REMOTE_ADDR="203.0.113.7",
        HTTP_X_FORWARDED_FOR="198.51.100.99",
    )
    assert entries_for(north_patient, A)[0].remote_addr == "203.0.113.7"


def test_it_records_each_view_of_a_patient_page(client, front_desk, north_patient):
    client.force_login(front_desk)
    client.get(north_patient.get_absolute_url(), REMOTE_ADDR="203.0.113.8")
    client.get(north_patient.get_absolute_url(), REMOTE_ADDR="203.0.113.8")
    accesses = entries_for(north_patient, A)
    assert len(accesses) == 2
    assert accesses[0].actor == front_desk
    assert accesses[0].remote_addr == "203.0.113.8"
    assert accesses[0].additional_data == {"patient_id": north_patient.pk}


def test_it_records_no_view_when_the_page_is_refused(client, front_desk, south_patient):
    client.force_login(front_desk)
    assert client.get(south_patient.get_absolute_url()).status_code == 404
    assert entries_for(south_patient, A) == []


# --- the bulk helpers -----------------------------------------------------------------


def test_it_writes_one_entry_per_row_for_bulk_create(north):
    staff_user = UserFactory()
    rows = [
        Patient(
            first_name=f"Bulk{i}",
            last_name="Import",
            date_of_birth=dt.date(1980, 1, i + 1),
            home_location=north,
        )
        for i in range(5)
    ]
    with set_actor(staff_user):
        created = bulk_create_audited(Patient, rows)
    entries = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Patient), action=C
    )
    assert entries.count() == 5
    assert {e.object_pk for e in entries} == {str(p.pk) for p in created}
    assert {e.actor for e in entries} == {staff_user}
    entry = entries.get(object_pk=str(created[0].pk))
    assert entry.additional_data == {"patient_id": created[0].pk}
    assert (entry.object_id, entry.object_repr) == (created[0].pk, str(created[0]))
    assert entry.actor_email == staff_user.email
    assert entry.timestamp is not None and entry.changes_text == ""
    # The same form as the entries auditlog's signals write for a single save.
    single = entries_for(PatientFactory(home_location=north, first_name="One"), C)[0]
    assert entry.changes_dict["first_name"] == ["None", "Bulk0"]
    assert single.changes_dict["first_name"] == ["None", "One"]
    assert entry.changes_dict.keys() == single.changes_dict.keys()


def test_bulk_writes_are_not_logged_where_auditlog_is_disabled(north):
    from auditlog.context import disable_auditlog

    before = LogEntry.objects.count()
    with disable_auditlog():
        (patient,) = bulk_create_audited(
            Patient,
            [
                Patient(
                    first_name="Dry",
                    last_name="Run",
                    date_of_birth=dt.date(1990, 1, 1),
                    home_location=north,
                )
            ],
        )
        update_audited(Patient.objects.filter(pk=patient.pk), language="es")
    assert Patient.objects.get(pk=patient.pk).language == "es"
    assert LogEntry.objects.count() == before


def test_it_writes_one_entry_per_changed_row_for_update(north):
    changed = PatientFactory.create_batch(3, home_location=north, language="en")
    unchanged = PatientFactory(home_location=north, language="es")
    get_system_user()
    before = LogEntry.objects.count()
    with system_actor():
        count = update_audited(Patient.objects.filter(home_location=north), language="es")
    assert count == 3
    assert LogEntry.objects.count() - before == 3
    assert entries_for(unchanged, U) == []
    for patient in changed:
        (entry,) = entries_for(patient, U)
        assert entry.changes_dict == {"language": ["en", "es"]}
        assert entry.actor.username == "system"
        patient.refresh_from_db()
        assert patient.language == "es"


def test_it_writes_nothing_when_an_update_changes_nothing(north):
    PatientFactory.create_batch(2, home_location=north, language="es")
    before = LogEntry.objects.count()
    assert update_audited(Patient.objects.all(), language="es") == 0
    assert LogEntry.objects.count() == before


# --- background work runs as the system account ------------------------------------------


@shared_task(name="tests.test_audit.rename_patient")
def rename_patient(patient_id: int, name: str) -> None:
    patient = Patient.objects.get(pk=patient_id)
    patient.first_name = name
    patient.save()


def test_it_records_a_task_as_done_by_the_system_account(north_patient):
    rename_patient.apply(args=[north_patient.pk, "Zoe"])
    (entry,) = entries_for(north_patient, U)
    assert entry.actor.username == "system"
    assert not entry.actor.is_active


def test_it_records_every_task_in_a_worker_as_the_system_account(north_patient):
    # A worker runs many tasks one after another in the same process.
    for name in ("First", "Second", "Third"):
        rename_patient.apply(args=[north_patient.pk, name])
    assert [e.actor.username for e in entries_for(north_patient, U)] == ["system"] * 3


def test_it_runs_a_task_as_system_even_after_a_request_in_the_same_thread(
    client, front_desk, north_patient
):
    client.force_login(front_desk)
    client.get(north_patient.get_absolute_url())
    rename_patient.apply(args=[north_patient.pk, "Zoe"])
    (entry,) = entries_for(north_patient, U)
    assert entry.actor.username == "system"


def test_it_keeps_a_real_actor_inside_system_actor(north_patient):
    person = UserFactory()
    with set_actor(person), system_actor():
        north_patient.first_name = "Zoe"
        north_patient.save()
    assert entries_for(north_patient, U)[0].actor == person


# --- nobody edits or deletes the trail through the admin ----------------------------------


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))
    return client


def test_it_lets_nobody_change_an_entry_in_the_admin(superuser_client, north_patient):
    entry = entries_for(north_patient, C)[0]
    url = reverse("admin:auditlog_logentry_change", args=[entry.pk])
    assert superuser_client.get(url).status_code == 200  # readable
    response = superuser_client.post(url, {"object_repr": "tampered", "action": D})
    assert response.status_code == 403
    entry.refresh_from_db()
    assert entry.action == C
    assert entry.object_repr != "tampered"


def test_it_lets_nobody_delete_an_entry_in_the_admin(superuser_client, north_patient):
    entry = entries_for(north_patient, C)[0]
    url = reverse("admin:auditlog_logentry_delete", args=[entry.pk])
    assert superuser_client.get(url).status_code == 403
    assert superuser_client.post(url, {"post": "yes"}).status_code == 403
    assert LogEntry.objects.filter(pk=entry.pk).exists()


def test_it_offers_no_bulk_delete_on_the_trail(superuser_client, north_patient):
    entry = entries_for(north_patient, C)[0]
    changelist = reverse("admin:auditlog_logentry_changelist")
    response = superuser_client.get(changelist)
    assert response.status_code == 200
    assert "delete_selected" not in response.content.decode()
    assert 'name="_selected_action"' not in response.content.decode()
    superuser_client.post(
        changelist, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}
    )
    assert LogEntry.objects.filter(pk=entry.pk).exists()


def test_it_lets_nobody_add_an_entry_in_the_admin(superuser_client):
    assert superuser_client.get(reverse("admin:auditlog_logentry_add")).status_code == 403


def test_it_keeps_the_grant_admin_audited(superuser_client, north):
    user = UserFactory()
    response = superuser_client.post(
        reverse("admin:locations_locationgrant_add"),
        {"user": user.pk, "location": north.pk, "role": Role.FRONT_DESK},
        REMOTE_ADDR="203.0.113.9",
    )
    assert response.status_code == 302
    (entry,) = entries_for(LocationGrant.objects.get(user=user), C)
    assert entry.actor.username == "root"
    assert entry.remote_addr == "203.0.113.9"


def test_it_hides_the_audit_trail_admin_from_staff_with_only_a_model_permission(client, north):
    from django.contrib.auth.models import Permission
    from django.urls import reverse

    from tests.factories import UserFactory

    clerk = UserFactory(username="clerk", is_staff=True)
    clerk.user_permissions.add(
        Permission.objects.get(codename="view_logentry", content_type__app_label="auditlog")
    )
    client.force_login(clerk)
    assert client.get(reverse("admin:auditlog_logentry_changelist")).status_code == 403


def test_it_offers_no_way_to_delete_a_staff_account_in_the_admin(client, north):
    from django.urls import reverse

    from tests.factories import UserFactory

    boss = UserFactory(username="boss", is_staff=True, is_superuser=True)
    victim = UserFactory(username="leaver")
    client.force_login(boss)
    response = client.post(reverse("admin:auth_user_delete", args=[victim.pk]), {"post": "yes"})
    assert response.status_code == 403
    assert type(victim).objects.filter(pk=victim.pk).exists()


@pytest.mark.django_db
def test_bulk_create_diffs_equal_auditlogs_own_for_every_registered_model():
    """The bulk helper's fast path writes exactly what a single save would."""
    from auditlog.diff import model_instance_diff

    from practicecrm.audit import _create_diffs
    from tests.factories import (
        AppointmentFactory,
        ChannelConsentFactory,
        FollowupFactory,
        PatientFactory,
    )

    patient = PatientFactory(preferred_name="Pepe", do_not_contact=True)
    opted_out = PatientFactory(sms_opted_out_at=dt.datetime(2026, 3, 8, 9, 30, tzinfo=dt.UTC))
    for obj in (
        patient,
        opted_out,
        ChannelConsentFactory(patient=patient),
        AppointmentFactory(patient=patient),
        FollowupFactory(patient=patient, location=patient.home_location),
        patient.home_location,
    ):
        (fast,) = _create_diffs(type(obj), [obj])
        slow = model_instance_diff(None, obj)
        assert fast == slow, type(obj).__name__
