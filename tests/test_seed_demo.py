"""seed_demo: the data `make run` shows, the accounts it prints, and its audit trail."""

import datetime as dt
import io
from collections import Counter
from collections.abc import Iterator

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.db import transaction
from django.db.models import Count, Q
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from followups.models import CadenceRule, ContactAttempt, Discharge, Followup
from followups.selectors import BUCKETS, WorklistFilters, worklist, worklist_counts
from locations.access import CHANGE_PATIENTS, locations_for
from locations.management import demo_data as demo
from locations.models import WEEKDAYS, Location, LocationGrant
from patients.models import (
    Appointment,
    ChannelConsent,
    ExternalIdentifier,
    Household,
    Patient,
)
from patients.phones import normalize_phone
from patients.selectors import patient_list
from tests.factories import LocationFactory

pytestmark = pytest.mark.django_db

USERNAMES = [spec.username for spec in demo.USERS]


def _seed() -> str:
    out = io.StringIO()
    # Enough patients for every follow-up bucket to show up whatever the date.
    call_command("seed_demo", patients=250, stdout=out)
    return out.getvalue()


def _printed_passwords(output: str) -> dict[str, str]:
    """username → password, read from the table the command prints."""
    passwords = {}
    for line in output.splitlines():
        cells = line.split()
        if cells and cells[0] in USERNAMES:
            passwords[cells[0]] = cells[1]
    return passwords


@pytest.fixture(scope="class")
def seeded(django_db_setup, django_db_blocker) -> Iterator[str]:
    """Seed once per class; each test then runs in a savepoint inside this transaction.

    Seeding takes a couple of seconds, so a fresh seed per test would dominate the file.
    Class-scoped fixtures run before conftest's function-scoped fast hasher, hence
    the hasher here too: the tests log in with the printed passwords.
    """
    fast_hasher = override_settings(
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]
    )
    with django_db_blocker.unblock(), fast_hasher, transaction.atomic():
        yield _seed()
        transaction.set_rollback(True)


class TestSeededDemo:
    """Everything about one seeded database (see the `seeded` fixture)."""

    def test_it_creates_locations_in_several_time_zones(self, seeded):
        locations = list(Location.objects.all())
        assert len(locations) >= 3
        assert len({location.time_zone for location in locations}) >= 2
        for location in locations:
            location.full_clean()  # phones, hours and sender identity pass the admin's checks
            assert location.module_recalls
        assert any(location.module_appointment_reminders for location in locations)

    def test_it_grants_each_role_at_its_locations(self, seeded):
        users = {user.username: user for user in get_user_model().objects.all()}
        for spec in demo.USERS:
            user = users[spec.username]
            granted = LocationGrant.objects.filter(user=user)
            assert {grant.role for grant in granted} == {spec.role}
            # The grant's signal gave the guardian permissions the selectors read.
            assert set(locations_for(user).values_list("slug", flat=True)) == set(spec.locations)
            assert user.is_superuser == user.is_staff == (spec.username == "admin")
        assert len(demo.USERS[3].locations) == 2  # frontdesk2 works at two locations
        assert not users["system"].is_active

    def test_it_prints_passwords_that_log_in(self, client, seeded):
        passwords = _printed_passwords(seeded)
        assert set(passwords) == set(USERNAMES)
        for username, password in passwords.items():
            # Through the login form rather than client.login(): axes needs the request.
            response = client.post(reverse("login"), {"username": username, "password": password})
            assert response.status_code == 302, username
            assert client.session["_auth_user_id"] == str(
                get_user_model().objects.get(username=username).pk
            )
            client.logout()

    def test_it_shows_front_desk_only_their_locations_patients(self, seeded):
        frontdesk = get_user_model().objects.get(username="frontdesk")
        riverside = Location.objects.get(slug="riverside-austin")
        visible = set(patient_list(user=frontdesk).values_list("pk", flat=True))
        expected = set(
            Patient.objects.filter(Q(home_location=riverside) | Q(shared_with=riverside))
            .distinct()
            .values_list("pk", flat=True)
        )
        assert visible == expected
        assert 0 < len(visible) < Patient.objects.count()

    def test_it_makes_showcase_patients_findable_without_accents_or_by_phone(self, seeded):
        frontdesk = get_user_model().objects.get(username="frontdesk")
        jose = Patient.objects.get(last_name="Núñez", first_name="José")
        assert jose in patient_list(user=frontdesk, query="nunez")
        zoe = Patient.objects.get(first_name="Zoë", last_name="Müller")
        assert zoe in patient_list(user=frontdesk, query="ZOE muller")
        national = jose.mobile_phone[2:]
        typed = f"({national[:3]}) {national[3:6]}-{national[6:]}"
        assert jose in patient_list(user=frontdesk, query=typed)

    def test_it_creates_valid_patients_with_fictional_contact_details(self, seeded):
        for patient in Patient.objects.all():
            patient.full_clean(exclude=["search_name", "search_phones"])
            for number in (patient.mobile_phone, patient.home_phone):
                if number:
                    assert normalize_phone(number) == number
                    assert number[5:9] == "5550", number  # NPA-555-01xx, fictional
            if patient.email:
                assert patient.email.rsplit("@", 1)[1] in {
                    "example.com",
                    "example.net",
                    "example.org",
                }
        households = Household.objects.prefetch_related("members")
        assert households
        for household in households:
            members = list(household.members.all())
            assert household.primary_contact in members
            assert household.primary_contact.age >= 18
            assert len({(m.last_name, m.address_line1, m.postal_code) for m in members}) == 1
        assert ChannelConsent.objects.exists()
        assert ExternalIdentifier.objects.filter(system="ehr_mrn").exists()

    def test_it_creates_two_years_of_history_with_every_status(self, seeded):
        now = timezone.now()
        appointments = Appointment.objects.select_related("location", "appointment_type", "patient")
        earliest = min(a.start for a in appointments)
        assert now - earliest >= dt.timedelta(days=2 * 365)
        statuses = set(appointments.values_list("status", flat=True))
        assert {"completed", "cancelled", "no_show", "scheduled"} <= statuses
        kinds = {spec.slug: spec.kind for spec in demo.LOCATIONS}
        type_kinds = {spec.name: spec.kind for spec in demo.APPOINTMENT_TYPES}
        for appointment in appointments:
            past = appointment.start < now
            assert past == (appointment.status in ("completed", "cancelled", "no_show"))
            if not past:
                assert appointment.start - now <= dt.timedelta(weeks=8, days=2)
            if appointment.location_id == appointment.patient.home_location_id:
                assert (
                    type_kinds[appointment.appointment_type.name]
                    == kinds[appointment.location.slug]
                )
            local = appointment.local_start
            opens, closes = appointment.location.business_hours[WEEKDAYS[local.weekday()]]
            assert opens <= f"{local:%H:%M}" and f"{appointment.local_end:%H:%M}" <= closes

    def test_it_audits_every_bulk_row_as_the_system_actor(self, seeded):
        models = (Patient, Household, ChannelConsent, ExternalIdentifier, Appointment)
        for model in (*models, Discharge, Followup):
            logged = set(
                LogEntry.objects.filter(
                    content_type=ContentType.objects.get_for_model(model),
                    action=LogEntry.Action.CREATE,
                    actor__username="system",
                ).values_list("object_pk", flat=True)
            )
            rows = {str(pk) for pk in model.objects.values_list("pk", flat=True)}
            assert rows, model
            assert rows <= logged, model

    def test_it_ships_cadence_rules_for_each_kind_of_practice(self, seeded):
        kinds = {spec.slug: spec.kind for spec in demo.LOCATIONS}
        rules = {
            rule.name: rule
            for rule in CadenceRule.objects.select_related("followup_type").prefetch_related(
                "trigger_types", "satisfying_types", "locations"
            )
        }
        assert set(rules) == {spec.name for spec in demo.CADENCES}
        for spec in demo.CADENCES:
            rule = rules[spec.name]
            assert not rule.all_locations
            assert {kinds[location.slug] for location in rule.locations.all()} == {spec.kind}
            assert (rule.event, rule.interval_value, rule.interval_unit) == (
                spec.event,
                *spec.interval,
            )
            assert {t.code for t in rule.trigger_types.all()} == set(spec.triggers)
            assert {t.code for t in rule.satisfying_types.all()} == set(spec.satisfying)
            assert rule.max_attempts == 3
            assert rule.outreach_plan
        values = {spec.name: spec.value for spec in demo.FOLLOWUP_TYPES}
        assert {r.followup_type.name: r.followup_type.value for r in rules.values()} == values

    def test_it_derives_followups_as_the_event_services_would(self, seeded):
        now = timezone.now()
        ahead: dict[int, dict[int, int]] = {}  # patient → appointment → type, booked ahead
        for pk, patient_id, type_id in Appointment.objects.filter(
            status__in=["scheduled", "confirmed"], start__gt=now
        ).values_list("pk", "patient_id", "appointment_type_id"):
            ahead.setdefault(patient_id, {})[pk] = type_id
        followups = Followup.objects.select_related(
            "rule", "source_appointment__location"
        ).prefetch_related("rule__satisfying_types", "rule__locations")
        for followup in followups:
            rule = followup.rule
            satisfying = {t.pk for t in rule.satisfying_types.all()}
            waiting_on = {
                pk for pk, t in ahead.get(followup.patient_id, {}).items() if t in satisfying
            }
            if followup.status == "scheduled":
                assert followup.scheduled_appointment_id in waiting_on
            elif followup.status in ("open", "contacted"):
                assert not waiting_on, "chased while a satisfying visit is booked"
            source = followup.source_appointment
            if source is not None:  # else started by a discharge
                assert source.location in rule.locations.all()
                assert followup.due_date == rule.due_after(source.local_start.date())
            assert followup.lapses_on == followup.due_date + dt.timedelta(rule.lapse_after_days)
        discharge_visits = {
            (a.patient_id, a.local_start.date())
            for a in Appointment.objects.select_related("location").filter(
                appointment_type__code="pt-discharge-visit", status="completed"
            )
        }
        discharges = Discharge.objects.select_related("location")
        assert discharges
        for discharge in discharges:
            assert discharge.location.slug == "lakeside-seattle"
            assert (discharge.patient_id, discharge.discharged_on) in discharge_visits

    def test_its_worklists_show_every_bucket_in_believable_numbers(self, seeded):
        admin = get_user_model().objects.get(username="admin")
        totals: Counter[str] = Counter()
        for location in Location.objects.all():
            today = timezone.now().astimezone(location.tz).date()
            filters = WorklistFilters(location=location)
            counts = worklist_counts(user=admin, filters=filters, today=today)
            totals.update(counts)
            # A morning's work, not the whole register.
            patients = Patient.objects.filter(home_location=location).count()
            assert counts["overdue"] + counts["due"] < 0.3 * patients
        assert all(totals[bucket] > 0 for bucket in BUCKETS), totals
        statuses = Counter(Followup.objects.values_list("status", flat=True))
        # Mostly worked: more recalls ended in a visit than lapsed.
        assert statuses["done"] > statuses["lapsed"] > 0
        assert statuses["scheduled"] > 0

        frontdesk = get_user_model().objects.get(username="frontdesk")
        riverside = Location.objects.get(slug="riverside-austin")
        today = timezone.now().astimezone(riverside.tz).date()
        rows = list(worklist(user=frontdesk, filters=WorklistFilters(), today=today))
        assert rows
        assert {row.location for row in rows} == {riverside}
        assert {row.bucket for row in rows} <= {"overdue", "due"}

    def test_its_contact_attempts_are_recent_and_by_staff_of_the_location(self, seeded):
        now = timezone.now()
        attempts = ContactAttempt.objects.select_related("followup__location", "staff")
        assert attempts
        for attempt in attempts:
            if attempt.followup.status in ("scheduled", "done"):
                # The recall history (issue #6): the call before a booking, months back.
                booked_at = attempt.followup.scheduled_appointment.created_at
                assert booked_at - dt.timedelta(days=11) < attempt.attempted_at < booked_at
            elif attempt.followup.status == "contacted":
                assert now - dt.timedelta(weeks=6) < attempt.attempted_at < now
            else:  # calls that led nowhere, in the months before
                assert now - dt.timedelta(weeks=21) < attempt.attempted_at < now
            assert attempt.followup.location in locations_for(attempt.staff, CHANGE_PATIENTS)
            # Logged as the colleague who made the call, not as the system.
            entry = LogEntry.objects.get_for_object(attempt).get(action=LogEntry.Action.CREATE)
            assert entry.actor == attempt.staff
        tried = (
            Followup.objects.exclude(status__in=("scheduled", "done"))
            .select_related("rule")
            .annotate(n=Count("attempts"))
        )
        assert {f.status for f in tried if f.n} <= {"contacted", "lapsed"}
        assert all(f.n < f.rule.max_attempts for f in tried)
        assert not any(f.status == "contacted" and not f.n for f in tried)
        assigned = set(tried.values_list("assigned_to__username", flat=True))
        assert assigned == {None, "frontdesk", "frontdesk2"}

    def test_it_adds_nothing_when_run_again(self, seeded):
        counts = [
            m.objects.count() for m in (Location, Patient, Appointment, LocationGrant, LogEntry)
        ]
        again = _seed()
        assert "already loaded" in again
        assert _printed_passwords(again) == _printed_passwords(seeded)
        assert [
            m.objects.count() for m in (Location, Patient, Appointment, LocationGrant, LogEntry)
        ] == counts


def test_it_refuses_a_database_that_holds_other_data():
    LocationFactory(slug="main-street")
    with pytest.raises(CommandError, match="only fills an empty database"):
        _seed()
    assert not get_user_model().objects.filter(username__in=USERNAMES).exists()
