"""generate_scale: the benchmark data set (issue #7) at a tiny scale, on PostgreSQL."""

import datetime as dt
import io
from collections.abc import Iterator

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import Count
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from followups.models import ContactAttempt, Followup
from followups.services import _HistoryReplay
from locations.access import locations_for
from locations.models import Location
from locations.scale import (
    BENCH_PASSWORD,
    DROPPED,
    _restore_dropped_indexes,
    _truncate,
    generate,
    sizes,
)
from patients.models import (
    Appointment,
    ChannelConsent,
    ExternalIdentifier,
    Household,
    Patient,
)
from practicecrm.audit import _create_diffs
from reminders.models import InboundMessage, OutboundMessage

pytestmark = pytest.mark.django_db

SCALE = 0.003  # 300 patients at 2 locations


def _anchor() -> dt.datetime:
    """The generator's "now": 09:00 UTC of the day, before opening time in every US zone."""
    return dt.datetime.combine(timezone.now().date(), dt.time(9), tzinfo=dt.UTC)


def _checksum() -> str:
    """One digest of the rows that carry the randomness (ids, names, dates, outcomes)."""
    queries = [
        "SELECT string_agg(concat_ws('|', id, first_name, last_name, date_of_birth, "
        "mobile_phone, email, status, household_id, sms_opted_out_at), ';' ORDER BY id) "
        "FROM patients_patient",
        "SELECT string_agg(concat_ws('|', id, patient_id, start, status, provider_id), ';' "
        "ORDER BY id) FROM patients_appointment",
        "SELECT string_agg(concat_ws('|', id, status, due_date, closed_at), ';' ORDER BY id) "
        "FROM followups_followup",
        "SELECT string_agg(concat_ws('|', idempotency_key, status, reason, body), ';' "
        "ORDER BY id) FROM reminders_outboundmessage",
        "SELECT string_agg(concat_ws('|', object_pk, changes::text, timestamp), ';' ORDER BY id) "
        "FROM auditlog_logentry WHERE action = 0 AND object_repr <> ''"
        " AND content_type_id IN (SELECT id FROM django_content_type WHERE app_label = 'patients'"
        " AND model IN ('patient', 'household', 'channelconsent', 'appointment'))",
    ]
    with connection.cursor() as cursor:
        parts = []
        for query in queries:
            cursor.execute(f"SELECT md5(({query}))")
            parts.append(cursor.fetchone()[0])
    return ":".join(parts)


@pytest.fixture(scope="class")
def generated(django_db_setup, django_db_blocker) -> Iterator[dict]:
    """Generate once per class, in a transaction rolled back at the end.

    TRUNCATE, DROP/CREATE INDEX and COPY are all transactional in PostgreSQL, so
    even --replace leaves nothing behind. The fast hasher as in test_seed_demo:
    class fixtures run before conftest's.
    """
    fast_hasher = override_settings(
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]
    )
    with django_db_blocker.unblock(), fast_hasher, transaction.atomic():
        # Start from the state --replace leaves (sequences restarted, in this
        # transaction), so the replace test below compares like with like: earlier
        # tests' rolled-back rows still advanced the sequences of this database.
        _truncate()
        out = io.StringIO()
        counts = generate(SCALE, seed=11, stdout=out)
        yield {"counts": counts, "output": out.getvalue(), "checksum": _checksum()}
        transaction.set_rollback(True)


class TestGenerated:
    def test_it_makes_the_sizes_of_its_scale(self, generated):
        size = sizes(SCALE)
        assert (size.locations, size.patients) == (2, 300)
        assert Location.objects.count() == 2
        assert Patient.objects.count() == 300
        assert get_user_model().objects.filter(is_active=True).count() == size.staff
        past = Appointment.objects.filter(start__lt=_anchor()).count()
        assert 0.8 * size.appointments < past < 1.25 * size.appointments
        ahead = Appointment.objects.filter(start__gt=_anchor()).count()
        assert 0.5 * size.future_appointments < ahead < 1.6 * size.future_appointments
        assert generated["counts"]["patients_patient"] == 300
        assert "Rows per table" in generated["output"]
        for location in Location.objects.all():
            location.full_clean()
            assert location.module_recalls and location.module_appointment_reminders
            assert location.go_live_date is not None

    def test_it_mixes_statuses_and_preferences_as_a_practice_does(self, generated):
        n = Patient.objects.count()
        active = Patient.objects.filter(status=Patient.Status.ACTIVE).count()
        assert 0.5 < active / n < 0.72
        assert Patient.objects.filter(status=Patient.Status.DECEASED).exists()
        assert 0.08 < Patient.objects.filter(household__isnull=False).count() / n < 0.3
        assert Patient.objects.filter(do_not_contact=True).count() / n < 0.04
        assert Patient.objects.filter(sms_opted_out_at__isnull=False).count() / n < 0.07
        assert ChannelConsent.objects.filter(status="granted").count() > n / 2
        assert ExternalIdentifier.objects.count() > 0.85 * n
        assert Patient.objects.exclude(language="en").exists()
        visits = dict(
            Appointment.objects.filter(start__lt=_anchor())
            .values_list("status")
            .annotate(n=Count("pk"))
        )
        assert visits["completed"] > 5 * (visits.get("cancelled", 0) + visits.get("no_show", 0))
        assert {"open", "done", "dismissed"} <= set(
            Followup.objects.values_list("status", flat=True)
        )
        assert ContactAttempt.objects.exists()
        statuses = set(OutboundMessage.objects.values_list("status", flat=True))
        assert {"delivered", "suppressed", "planned"} <= statuses
        assert InboundMessage.objects.filter(action="confirmed").exists()

    def test_it_follows_the_cadence_rules(self, generated):
        """The follow-ups are what followups_backfill's replay makes of the history."""
        replay = _HistoryReplay(now=_anchor())
        visits: dict[int, list[tuple]] = {}
        for row in Appointment.objects.values_list(
            "patient_id", "start", "id", "location_id", "appointment_type_id", "status"
        ):
            visits.setdefault(row[0], []).append((row[1], 0, *row[2:]))
        expected = {
            (f.patient_id, f.followup_type_id, f.due_date, f.source_appointment_id)
            for patient_id, events in visits.items()
            for f in replay.patient(patient_id, events)
        }
        stored = set(
            Followup.objects.values_list(
                "patient_id", "followup_type_id", "due_date", "source_appointment_id"
            )
        )
        assert stored == expected

    def test_it_writes_the_audit_entries_the_app_would(self, generated):
        for model in (Household, Patient, ChannelConsent, Appointment, Followup, ContactAttempt):
            objects = list(model.objects.order_by("?")[:25])
            entries = {
                e.object_id: e
                for e in LogEntry.objects.filter(
                    content_type=ContentType.objects.get_for_model(model),
                    object_id__in=[o.pk for o in objects],
                    action=LogEntry.Action.CREATE,
                )
            }
            diffs = _create_diffs(model, objects)
            for obj, diff in zip(objects, diffs, strict=True):
                entry = entries[obj.pk]
                assert entry.changes == {k: list(v) for k, v in diff.items()}, model
                assert entry.object_repr == str(obj)
                assert entry.additional_data == obj.get_additional_data()
        audited = LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Patient), action=LogEntry.Action.CREATE
        )
        assert audited.count() == Patient.objects.count()

    def test_it_lets_the_bench_users_log_in_to_their_locations(self, client, generated):
        assert BENCH_PASSWORD in generated["output"]
        users = get_user_model().objects
        for username, locations in (
            ("bench-admin", 2),
            ("bench-manager-20", 2),
            ("bench-frontdesk-1", 1),
        ):
            response = client.post(
                reverse("login"), {"username": username, "password": BENCH_PASSWORD}
            )
            assert response.status_code == 302, username
            assert locations_for(users.get(username=username)).count() == locations
            client.logout()

    def test_it_leaves_the_pages_rendering(self, client, generated):
        client.force_login(get_user_model().objects.get(username="bench-admin"))
        patient = Patient.objects.filter(status="active", appointments__isnull=False).first()
        for url in (
            reverse("followups:today"),
            reverse("patients:list") + "?q=a",
            reverse("patients:detail", args=[patient.pk]),
            reverse("patients:timeline", args=[patient.pk]),
            reverse("reports:dashboard"),
            reverse("reminders:messages"),
        ):
            assert client.get(url).status_code == 200, url

    def test_it_sets_the_sequences_for_new_rows(self, generated):
        location = Location.objects.first()
        patient = Patient.objects.create(
            first_name="New", last_name="Person", date_of_birth="1990-01-01", home_location=location
        )
        assert patient.pk > Patient.objects.exclude(pk=patient.pk).order_by("-pk")[0].pk
        followup = Followup.objects.filter(status="open").first()
        ContactAttempt.objects.create(
            followup=followup, channel="call", outcome="no_answer", attempted_at=followup.created_at
        )

    def test_it_leaves_the_message_tally_counted_and_folded_in(self, generated):
        from reminders.models import MessageTally, MessageTallyChange

        assert not MessageTallyChange.objects.exists()
        # Each status's total (a message not sent is also counted by its reason).
        kept = MessageTally.objects.filter(kind__in=["appointment_reminder", "recall"], reason="")
        assert sum(kept.values_list("n", flat=True)) == (
            OutboundMessage.objects.filter(kind__in=["appointment_reminder", "recall"]).count()
        )

    def test_it_leaves_the_dashboards_contacts_derived(self, generated):
        from reports.models import RecallContact
        from tests.reports.test_contacts import expected, kept

        # The load defers the triggers (reports.contacts.deferred) and derives once,
        # each row in its place among its follow-up's contacts.
        assert kept() == expected()
        assert RecallContact.objects.filter(prev_day__isnull=False).exists()
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('reports.contacts_deferred', true)")
            assert cursor.fetchone()[0] in (None, "")  # the triggers work again

        went_out = OutboundMessage.objects.filter(
            kind="recall",
            followup__isnull=False,
            status__in=["sent", "delivered", "undelivered"],
            sent_at__isnull=False,
        )
        assert RecallContact.objects.filter(message_id__isnull=False).count() == went_out.count()
        assert RecallContact.objects.filter(attempt_id__isnull=False).count() == (
            ContactAttempt.objects.count()
        )
        booked = RecallContact.objects.filter(booked_at__isnull=False).values("followup_id")
        assert (
            not Followup.objects.filter(pk__in=booked)
            .exclude(status__in=["scheduled", "done"])
            .exists()
        )
        assert booked.exists()

    def test_it_leaves_the_dashboards_visit_flags_derived(self, generated):
        from reports.models import VisitFlags
        from tests.reports.test_visits import expected, kept

        # The load defers the triggers (reports.visits.deferred) and derives once.
        assert kept() == expected()
        assert VisitFlags.objects.filter(reminded=True).exists()
        assert VisitFlags.objects.filter(confirmed=True).exists()
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('reports.visits_deferred', true)")
            assert cursor.fetchone()[0] in (None, "")  # the triggers work again

    def test_it_refuses_to_mix_and_replaces_identically(self, generated):
        with pytest.raises(CommandError, match="--replace"):
            generate(SCALE, seed=11)
        call_command("generate_scale", scale=SCALE, seed=11, replace=True, stdout=io.StringIO())
        assert _checksum() == generated["checksum"]


def test_it_refuses_sqlite(settings, monkeypatch):
    monkeypatch.setattr(connection, "vendor", "sqlite")
    with pytest.raises(CommandError, match="PostgreSQL"):
        generate(0.001)


def test_it_rebuilds_the_indexes_an_interrupted_run_dropped(db):
    """A run killed while its indexes were dropped: the next run puts them back first."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'patient_dob_idx'")
        (definition,) = cursor.fetchone()
        cursor.execute(f"CREATE TABLE {DROPPED} (name text PRIMARY KEY, definition text)")
        cursor.execute(f"INSERT INTO {DROPPED} VALUES ('patient_dob_idx', %s)", [definition])
        cursor.execute("DROP INDEX patient_dob_idx")
        _restore_dropped_indexes(cursor)
        cursor.execute("SELECT to_regclass('patient_dob_idx'), to_regclass(%s)", [DROPPED])
        assert cursor.fetchone() == ("patient_dob_idx", None)
