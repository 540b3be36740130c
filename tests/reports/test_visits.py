"""The dashboard's kept visit flags (reports.visits) against their sources.

Every check derives the rows again here, in Python — each day taken on its
location's calendar through zoneinfo, each flag from the visit's own messages
and replies — not through the triggers' SQL, and compares that with what the
triggers kept, after random writes through every path the application and its
imports use.
"""

import datetime as dt
import random
import threading
import time
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import F

from patients.models import Appointment
from reminders.models import InboundMessage, OutboundMessage
from reports import visits
from reports.models import VisitFlags
from tests.factories import (
    AppointmentFactory,
    AppointmentTypeFactory,
    LocationFactory,
    PatientFactory,
)

pytestmark = pytest.mark.skipif(
    not visits.available(), reason="PostgreSQL keeps the rows; SQLite counts live"
)

Status = OutboundMessage.Status
Kind = OutboundMessage.Kind
Action = InboundMessage.Action
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
WENT_OUT = (Status.SENT, Status.DELIVERED, Status.UNDELIVERED)
FIELDS = ("appointment_id", "location_id", "day", "start", "status", "reminded", "confirmed")


def expected() -> set[tuple]:
    reminded = set(
        OutboundMessage.objects.filter(
            kind=Kind.APPOINTMENT_REMINDER, status__in=WENT_OUT, appointment__isnull=False
        ).values_list("appointment_id", flat=True)
    )
    confirmed = set(
        InboundMessage.objects.filter(
            action=Action.CONFIRMED, confirmed_appointment__isnull=False
        ).values_list("confirmed_appointment_id", flat=True)
    )
    return {
        (
            a.pk,
            a.location_id,
            a.start.astimezone(ZoneInfo(a.location.time_zone)).date(),
            a.start,
            a.status,
            a.pk in reminded,
            a.pk in confirmed,
        )
        for a in Appointment.objects.select_related("location")
    }


def kept() -> set[tuple]:
    return set(VisitFlags.objects.values_list(*FIELDS))


class Writer:
    """Random writes to every source of the kept rows."""

    ACTIONS = (
        "visit",
        "visits_bulk",
        "visit_status",
        "visit_move",
        "visit_relocate",
        "visit_noop",
        "visit_delete",
        "reminder",
        "reminders_bulk",
        "reminder_status",
        "reminder_raw",
        "reminder_retarget",
        "reminder_kind",
        "reminder_delete",
        "reply",
        "reply_change",
        "reply_delete",
        "zone",
    )

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.locations = [
            LocationFactory(slug="v-east", time_zone="America/New_York"),
            LocationFactory(slug="v-west", time_zone="America/Los_Angeles"),
            LocationFactory(slug="v-far", time_zone="Pacific/Auckland"),
        ]
        self.patients = [PatientFactory(home_location=loc) for loc in self.locations]
        self.kind = AppointmentTypeFactory()
        self.n = 0
        for _ in range(4):
            self._visit().save()

    def _moment(self) -> dt.datetime:
        # Around local midnights, so that the day depends on the zone.
        return START + dt.timedelta(
            hours=self.rng.randrange(0, 24 * 30), minutes=self.rng.choice([0, 59])
        )

    def _visit(self) -> Appointment:
        start = self._moment()
        return Appointment(
            patient=self.rng.choice(self.patients),
            location=self.rng.choice(self.locations),
            appointment_type=self.kind,
            start=start,
            end=start + dt.timedelta(minutes=30),
            status=self.rng.choice(list(Appointment.Status)),
        )

    def _visits(self) -> list[Appointment]:
        return list(Appointment.objects.all()) or [AppointmentFactory(start=self._moment())]

    def _reminder(self) -> OutboundMessage:
        self.n += 1
        visit = self.rng.choice(self._visits())
        status = self.rng.choice(list(Status))
        return OutboundMessage(
            idempotency_key=f"visits-{self.n}",
            kind=self.rng.choice([Kind.APPOINTMENT_REMINDER] * 3 + list(Kind)),
            channel=self.rng.choice(["sms", "email"]),
            patient=visit.patient,
            location=visit.location,
            appointment=visit if self.rng.random() < 0.9 else None,
            to="+15125550100",
            sender="+15125550199",
            body="See you tomorrow at 9",
            scheduled_for=visit.start - dt.timedelta(days=1),
            sent_at=visit.start - dt.timedelta(days=1) if status in WENT_OUT else None,
            status=status,
        )

    def _reply(self) -> InboundMessage:
        self.n += 1
        visit = self.rng.choice(self._visits())
        return InboundMessage(
            provider_id=f"SM-visits-{self.n}",
            from_number="+15125550100",
            to_number="+15125550199",
            body="C",
            location=visit.location,
            action=self.rng.choice([Action.CONFIRMED, Action.CONFIRMED, *Action]),
            confirmed_appointment=visit if self.rng.random() < 0.9 else None,
            received_at=visit.start - dt.timedelta(hours=20),
        )

    def step(self) -> str:
        action = self.rng.choice(self.ACTIONS)
        visits_ = self._visits()
        reminders = list(OutboundMessage.objects.all())
        replies = list(InboundMessage.objects.all())
        pick = self.rng.choice
        if action == "visit":
            self._visit().save()
        elif action == "visits_bulk":  # as an import loads a batch
            Appointment.objects.bulk_create([self._visit() for _ in range(self.rng.randint(2, 6))])
        elif action == "visit_status":  # checked in, no-show, cancelled
            visit = pick(visits_)
            visit.status = pick(list(Appointment.Status))
            visit.save()
        elif action == "visit_move":
            start = self._moment()
            Appointment.objects.filter(pk=pick(visits_).pk).update(
                start=start, end=start + dt.timedelta(minutes=45)
            )
        elif action == "visit_relocate":
            Appointment.objects.filter(pk=pick(visits_).pk).update(location=pick(self.locations))
        elif action == "visit_noop":
            Appointment.objects.filter(pk=pick(visits_).pk).update(
                end=F("end") + dt.timedelta(minutes=15), provider=None
            )
        elif action == "visit_delete":  # its messages and replies keep no visit
            pick(visits_).delete()
        elif action == "reminder" or (action.startswith("reminder_") and not reminders):
            action = "reminder"
            self._reminder().save()
        elif action == "reminders_bulk":
            OutboundMessage.objects.bulk_create(
                [self._reminder() for _ in range(self.rng.randint(2, 6))]
            )
        elif action == "reminder_status":  # a send, a receipt, a failure, a cancel
            m = pick(reminders)
            m.status = pick(list(Status))
            m.save()
        elif action == "reminder_raw":  # as reminders.services marks a batch sent
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE reminders_outboundmessage SET status = %s, sent_at = %s"
                    " WHERE id = ANY(%s)",
                    [
                        Status.SENT,
                        self._moment(),
                        [m.pk for m in self.rng.sample(reminders, min(3, len(reminders)))],
                    ],
                )
        elif action == "reminder_retarget":
            OutboundMessage.objects.filter(pk=pick(reminders).pk).update(
                appointment=pick([*visits_, None])
            )
        elif action == "reminder_kind":
            OutboundMessage.objects.filter(pk=pick(reminders).pk).update(kind=pick(list(Kind)))
        elif action == "reminder_delete":
            OutboundMessage.objects.filter(pk=pick(reminders).pk).delete()
        elif action == "reply" or (action.startswith("reply_") and not replies):
            action = "reply"
            self._reply().save()
        elif action == "reply_change":
            r = pick(replies)
            r.action = pick(list(Action))
            r.confirmed_appointment = pick([*visits_, None])
            r.save()
        elif action == "reply_delete":
            pick(replies).delete()
        else:  # a location moves to another time zone
            location = pick(self.locations)
            location.time_zone = pick(["America/Chicago", "Europe/Berlin", "Asia/Tokyo"])
            location.save(update_fields=["time_zone"])
        return action


@pytest.mark.parametrize("seed", range(4))
def test_the_kept_visit_flags_follow_every_kind_of_write(db, seed):
    writer = Writer(seed)
    seen = set()
    for _ in range(90):
        seen.add(writer.step())
        assert kept() == expected(), seen
    assert len(seen) >= len(Writer.ACTIONS) - 2, set(Writer.ACTIONS) - seen
    assert VisitFlags.objects.filter(reminded=True).exists()
    assert VisitFlags.objects.filter(confirmed=True).exists()


def _versions() -> dict[int, str]:
    """Each kept row's physical version: an update of the row writes a new one."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT appointment_id, ctid::text FROM reports_visitflags")
        return dict(cursor.fetchall())


def test_writes_that_change_nothing_kept_rewrite_nothing(db):
    writer = Writer(5)
    visit = Appointment.objects.first()
    m = writer._reminder()
    m.kind, m.status, m.appointment = Kind.APPOINTMENT_REMINDER, Status.SENT, visit
    m.save()
    before = _versions()
    OutboundMessage.objects.filter(pk=m.pk).update(status=Status.DELIVERED, provider_id="SM1")
    Appointment.objects.filter(pk=visit.pk).update(external_id="EHR-7", end=visit.end)
    second = writer._reminder()
    second.kind, second.status, second.appointment = Kind.APPOINTMENT_REMINDER, Status.SENT, visit
    second.save()  # already reminded
    assert _versions() == before
    no_show = Appointment.Status.NO_SHOW
    other = Appointment.Status.COMPLETED if visit.status == no_show else no_show
    Appointment.objects.filter(pk=visit.pk).update(status=other)
    assert _versions() != before
    assert kept() == expected()


def test_truncating_a_source_clears_its_share(db):
    writer = Writer(6)
    for _ in range(40):
        writer.step()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE waits for no deferred check
        cursor.execute("TRUNCATE reminders_outboundmessage, reminders_inboundmessage CASCADE")
    assert not VisitFlags.objects.filter(reminded=True).exists()
    assert not VisitFlags.objects.filter(confirmed=True).exists()
    assert kept() == expected()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE patients_appointment CASCADE")
    assert not VisitFlags.objects.exists()


def test_rebuild_derives_the_rows_again(db, capsys):
    writer = Writer(7)
    for _ in range(30):
        writer.step()
    VisitFlags.objects.update(reminded=True)  # lost, say, by a restore around them
    VisitFlags.objects.filter(pk__in=VisitFlags.objects.values("pk")[:2]).delete()
    call_command("rebuild_visit_flags")
    assert "Visit flags rebuilt" in capsys.readouterr().out
    assert kept() == expected()


@pytest.mark.django_db(transaction=True)
def test_two_writers_about_one_visit_cannot_leave_each_others_change_out():
    """One transaction sends reminder B while another marks reminder A failed. The
    visit stays reminded (B went out) only if the second decides after the first
    commits: it must wait for the visit's row even though the first changed
    nothing on it (A had already reminded it)."""
    writer = Writer(8)
    visit = Appointment.objects.first()
    a, b = writer._reminder(), writer._reminder()
    a.kind = b.kind = Kind.APPOINTMENT_REMINDER
    a.appointment = b.appointment = visit
    a.status, b.status = Status.SENT, Status.QUEUED
    a.save()
    b.save()
    assert VisitFlags.objects.get(pk=visit.pk).reminded

    def fail_a() -> None:
        try:
            with transaction.atomic():
                OutboundMessage.objects.filter(pk=a.pk).update(status=Status.FAILED)
        finally:
            connection.close()

    with transaction.atomic():
        OutboundMessage.objects.filter(pk=b.pk).update(status=Status.SENT)
        other = threading.Thread(target=fail_a)
        other.start()
        deadline = time.monotonic() + 10
        while other.is_alive() and time.monotonic() < deadline:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
                if cursor.fetchone()[0]:
                    break
            time.sleep(0.02)
    other.join(10)
    assert not other.is_alive()
    assert VisitFlags.objects.get(pk=visit.pk).reminded
    assert kept() == expected()
