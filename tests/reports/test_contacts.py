"""The dashboard's kept recall contacts (reports.contacts) against their sources.

Every check derives the rows again here, in Python — each day taken on its
location's calendar through zoneinfo, each booking from the follow-up's visit —
not through the triggers' SQL, and compares that with what the triggers kept,
after random writes through every path the application and its imports use.
"""

import datetime as dt
import random
import threading
import time
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from followups.models import ContactAttempt, Followup
from locations.models import Role
from patients.models import Appointment
from reminders.models import OutboundMessage
from reports import contacts
from reports.models import RecallContact
from tests.factories import (
    AppointmentFactory,
    FollowupFactory,
    FollowupTypeFactory,
    LocationFactory,
    PatientFactory,
    staff,
)

pytestmark = pytest.mark.skipif(
    not contacts.available(), reason="PostgreSQL keeps the rows; SQLite counts live"
)

Status = OutboundMessage.Status
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
WENT_OUT = (Status.SENT, Status.DELIVERED, Status.UNDELIVERED)
BOOKED = (Followup.Status.SCHEDULED, Followup.Status.DONE)
FIELDS = (
    "attempt_id",
    "message_id",
    "followup_id",
    "location_id",
    "followup_location_id",
    "followup_type_id",
    "due_date",
    "at",
    "day",
    "staff_id",
    "booked_at",
    "booked_day",
    "prev_day",
    "next_at",
    "next_day",
    "solo",
)


def _day(moment: dt.datetime, time_zone: str) -> dt.date:
    return moment.astimezone(ZoneInfo(time_zone)).date()


def expected() -> set[tuple]:
    """Every attempt and recall message that went out, as the dashboard needs it."""
    rows = set()

    def booking(f: Followup) -> tuple:
        if f.status in BOOKED and f.scheduled_appointment is not None:
            at = f.scheduled_appointment.created_at
            return at, _day(at, f.location.time_zone)
        return None, None

    def about(f: Followup) -> tuple:
        return (f.pk, None, f.location_id, f.followup_type_id, f.due_date)

    for t in ContactAttempt.objects.select_related(
        "location", "followup__location", "followup__scheduled_appointment"
    ):
        f = t.followup
        rows.add(
            (
                t.pk,
                None,
                f.pk,
                t.location_id,
                f.location_id,
                f.followup_type_id,
                f.due_date,
                t.attempted_at,
                _day(t.attempted_at, t.location.time_zone),
                t.staff_id,
                *booking(f),
            )
        )
    for m in OutboundMessage.objects.filter(
        kind=OutboundMessage.Kind.RECALL,
        status__in=WENT_OUT,
        followup__isnull=False,
        sent_at__isnull=False,
    ).select_related("location", "followup__location", "followup__scheduled_appointment"):
        f = m.followup
        rows.add(
            (
                None,
                m.pk,
                f.pk,
                m.location_id,
                f.location_id,
                f.followup_type_id,
                f.due_date,
                m.sent_at,
                _day(m.sent_at, m.location.time_zone),
                None,
                *booking(f),
            )
        )
    return _ordered(rows)


def _ordered(rows: set[tuple]) -> set[tuple]:
    """Each row with its place among its follow-up's contacts: in order of time,
    attempts before messages, then by id — the previous row's day, the next row's
    time and day, and whether every one is at the follow-up's location."""
    by_followup: dict[int, list[tuple]] = {}
    for row in rows:
        by_followup.setdefault(row[2], []).append(row)
    placed = set()
    for chain in by_followup.values():
        chain.sort(key=lambda r: (r[7], r[0] is None, r[0] or 0, r[1] or 0))
        solo = all(r[3] == r[4] for r in chain)
        for i, row in enumerate(chain):
            before = chain[i - 1] if i else None
            after = chain[i + 1] if i + 1 < len(chain) else None
            placed.add(
                (
                    *row,
                    before[8] if before else None,
                    after[7] if after else None,
                    after[8] if after else None,
                    solo,
                )
            )
    return placed


def kept() -> set[tuple]:
    rows = list(RecallContact.objects.values_list(*FIELDS))
    assert len(rows) == len(set(rows)), "a source kept twice"
    return set(rows)


class Writer:
    """Random writes to every source of the kept rows."""

    ACTIONS = (
        "attempt",
        "attempts_bulk",
        "attempt_move",
        "attempt_delete",
        "message",
        "messages_bulk",
        "message_status",
        "message_raw",
        "message_noop",
        "message_delete",
        "book",
        "unbook",
        "done",
        "recorded",
        "retype",
        "relocate",
        "followup_delete",
        "visit_delete",
        "zone",
    )

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.locations = [
            LocationFactory(slug="c-east", time_zone="America/New_York"),
            LocationFactory(slug="c-west", time_zone="America/Los_Angeles"),
            LocationFactory(slug="c-far", time_zone="Pacific/Auckland"),
        ]
        self.types = [FollowupTypeFactory(code="c-recall"), FollowupTypeFactory(code="c-perio")]
        self.callers = [None, staff(Role.FRONT_DESK, *self.locations, username="caller")]
        self.n = 0
        for _ in range(4):
            self._followup()

    def _moment(self) -> dt.datetime:
        # Around local midnights, so that the day depends on the zone.
        return START + dt.timedelta(
            hours=self.rng.randrange(0, 24 * 30), minutes=self.rng.choice([0, 59])
        )

    def _followup(self) -> Followup:
        location = self.rng.choice(self.locations)
        due = START.date() + dt.timedelta(days=self.rng.randrange(-20, 20))
        return FollowupFactory(
            patient=PatientFactory(home_location=location),
            location=location,
            followup_type=self.rng.choice(self.types),
            due_date=due,
            lapses_on=due + dt.timedelta(days=60),
        )

    def _followups(self) -> list[Followup]:
        return list(Followup.objects.all()) or [self._followup()]

    def _attempt(self, f: Followup) -> ContactAttempt:
        return ContactAttempt(
            followup=f,
            location_id=f.location_id,
            channel="call",
            outcome="no_answer",
            staff=self.rng.choice(self.callers),
            attempted_at=self._moment(),
        )

    def _message(self) -> OutboundMessage:
        self.n += 1
        f = self.rng.choice(self._followups())
        status = self.rng.choice(list(Status))
        location = self.rng.choice([f.location, f.location, self.rng.choice(self.locations)])
        at = self._moment()
        return OutboundMessage(
            idempotency_key=f"contacts-{self.n}",
            kind=self.rng.choice([OutboundMessage.Kind.RECALL] * 3 + list(OutboundMessage.Kind)),
            channel="sms",
            patient=f.patient,
            location=location,
            followup=f if self.rng.random() < 0.9 else None,
            to="+15125550100",
            sender="+15125550199",
            body="Time for your check-up",
            scheduled_for=at,
            sent_at=at if status in WENT_OUT or self.rng.random() < 0.2 else None,
            status=status,
        )

    def step(self) -> str:
        action = self.rng.choice(self.ACTIONS)
        attempts = list(ContactAttempt.objects.all())
        messages = list(OutboundMessage.objects.all())
        followups = self._followups()
        pick = self.rng.choice
        if action == "attempt" or (action.startswith("attempt_") and not attempts):
            action = "attempt"
            self._attempt(pick(followups)).save()
        elif action == "attempts_bulk":
            ContactAttempt.objects.bulk_create(
                [self._attempt(pick(followups)) for _ in range(self.rng.randint(2, 6))]
            )
        elif action == "attempt_move":
            ContactAttempt.objects.filter(pk=pick(attempts).pk).update(attempted_at=self._moment())
        elif action == "attempt_delete":
            pick(attempts).delete()
        elif action == "message" or (action.startswith("message_") and not messages):
            action = "message"
            self._message().save()
        elif action == "messages_bulk":
            OutboundMessage.objects.bulk_create(
                [self._message() for _ in range(self.rng.randint(2, 6))]
            )
        elif action == "message_status":  # a send, a receipt, a failure, a cancel
            m = pick(messages)
            m.status = pick(list(Status))
            if m.status in WENT_OUT and m.sent_at is None:
                m.sent_at = self._moment()
            m.save()
        elif action == "message_raw":  # as reminders.services marks a batch sent
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE reminders_outboundmessage SET status = %s, sent_at = %s"
                    " WHERE id = ANY(%s)",
                    [
                        Status.SENT,
                        self._moment(),
                        [m.pk for m in self.rng.sample(messages, min(3, len(messages)))],
                    ],
                )
        elif action == "message_noop":
            OutboundMessage.objects.filter(pk=pick(messages).pk).update(provider_id="SMx")
        elif action == "message_delete":
            OutboundMessage.objects.filter(pk=pick(messages).pk).delete()
        elif action == "book":
            f = pick(followups)
            visit = AppointmentFactory(patient=f.patient, location=f.location, start=self._moment())
            f.scheduled_appointment, f.status = visit, Followup.Status.SCHEDULED
            f.save()
        elif action == "unbook":  # the booking cancelled: the follow-up reopens
            Followup.objects.filter(pk=pick(followups).pk).update(
                scheduled_appointment=None, status=Followup.Status.OPEN
            )
        elif action == "done":
            Followup.objects.filter(pk=pick(followups).pk).update(status=Followup.Status.DONE)
        elif action == "recorded":  # an import brings the visit's own recorded time
            visits = list(Appointment.objects.all())
            if visits:
                Appointment.objects.filter(pk=pick(visits).pk).update(created_at=self._moment())
        elif action == "retype":
            f = pick(followups)
            f.followup_type = pick(self.types)
            f.due_date += dt.timedelta(days=self.rng.choice([-3, 7]))
            f.save()
        elif action == "relocate":  # its contacts stay where they were made
            f = pick(followups)
            f.location = pick(self.locations)
            f.save()
        elif action == "followup_delete":
            pick(followups).delete()
            self._followup()
        elif action == "visit_delete":
            visits = list(Appointment.objects.all())
            if visits:
                pick(visits).delete()
        else:  # a location moves to another time zone
            location = pick(self.locations)
            location.time_zone = pick(["America/Chicago", "Europe/Berlin", "Asia/Tokyo"])
            location.save(update_fields=["time_zone"])
        return action


@pytest.mark.parametrize("seed", range(4))
def test_the_kept_contacts_follow_every_kind_of_write(db, seed):
    writer = Writer(seed)
    seen = set()
    for _ in range(90):
        seen.add(writer.step())
        assert kept() == expected(), seen
    assert len(seen) >= len(Writer.ACTIONS) - 2, set(Writer.ACTIONS) - seen
    assert RecallContact.objects.exists()


def test_a_delivery_receipt_after_sent_rewrites_nothing(db):
    writer = Writer(5)
    m = writer._message()
    m.kind, m.status, m.sent_at = OutboundMessage.Kind.RECALL, Status.SENT, START
    m.followup = Followup.objects.first()
    m.save()
    before = RecallContact.objects.get(message_id=m.pk)
    OutboundMessage.objects.filter(pk=m.pk).update(status=Status.DELIVERED, provider_id="SM1")
    assert RecallContact.objects.get(message_id=m.pk).pk == before.pk  # not deleted, re-added


def test_truncating_a_source_empties_its_share(db):
    writer = Writer(6)
    for _ in range(30):
        writer.step()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE waits for no deferred check
        cursor.execute("TRUNCATE reminders_outboundmessage CASCADE")
    assert not RecallContact.objects.filter(message_id__isnull=False).exists()
    assert kept() == expected()


def test_rebuild_derives_the_rows_again(db, capsys):
    writer = Writer(7)
    for _ in range(30):
        writer.step()
    RecallContact.objects.update(day=START.date())  # lost, say, by a restore around them
    RecallContact.objects.filter(pk__in=RecallContact.objects.values("pk")[:2]).delete()
    call_command("rebuild_recall_contacts")
    assert "Recall contacts rebuilt" in capsys.readouterr().out
    assert kept() == expected()


def _versions() -> dict[int, str]:
    """Each kept row's physical version: an update of the row writes a new one."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, ctid::text FROM reports_recallcontact")
        return dict(cursor.fetchall())


def test_a_follow_up_update_that_changes_nothing_kept_rewrites_nothing(db):
    writer = Writer(8)
    followup = Followup.objects.first()
    writer._attempt(followup).save()
    before = _versions()
    Followup.objects.filter(pk=followup.pk).update(
        source=Followup.Source.IMPORT, snoozed_until=START.date(), reason="Imported"
    )
    assert _versions() == before
    Followup.objects.filter(pk=followup.pk).update(
        due_date=followup.due_date + dt.timedelta(days=99)
    )
    assert _versions() != before
    assert kept() == expected()


@pytest.mark.django_db(transaction=True)
def test_two_writers_about_one_follow_up_order_both_contacts():
    """A recall message goes out while a call about the same follow-up is logged,
    both uncommitted at once: each sees only its own new row. The one that orders
    the follow-up's rows second must wait for the first's commit, else both rows
    stay "first" and the follow-up counts twice as contacted."""
    writer = Writer(9)
    followup = Followup.objects.first()
    message = writer._message()
    message.kind, message.status, message.sent_at = OutboundMessage.Kind.RECALL, Status.SENT, START
    message.location, message.followup = followup.location, followup

    def call() -> None:
        try:
            with transaction.atomic():
                writer._attempt(followup).save()
        finally:
            connection.close()

    with transaction.atomic():
        message.save()
        other = threading.Thread(target=call)
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
    assert RecallContact.objects.filter(followup_id=followup.pk).count() == 2
    assert RecallContact.objects.filter(followup_id=followup.pk, prev_day__isnull=True).count() == 1
    assert kept() == expected()
