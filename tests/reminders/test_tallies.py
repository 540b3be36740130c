"""The outbox's kept counts (reminders.tallies) against the outbox's own rows.

Every check recounts the outbox here, in Python, with each message's day taken
on its location's calendar through zoneinfo — not through the triggers' SQL —
and compares that with what the triggers kept, before and after compaction.
"""

import datetime as dt
import random
from collections import Counter
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.db import connection

from reminders import tallies
from reminders.models import MessageTally, MessageTallyChange, OutboundMessage
from reminders.tasks import compact_message_tallies
from tests.factories import LocationFactory, PatientFactory

pytestmark = pytest.mark.skipif(
    not tallies.available(), reason="PostgreSQL keeps the tally; SQLite counts live"
)

Status = OutboundMessage.Status
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def expected() -> Counter:
    """The outbox counted by (location, local day, kind, status), reason blank, and
    the messages not sent also by their reason."""
    counts: Counter = Counter()
    for m in OutboundMessage.objects.select_related("location"):
        moment = m.sent_at or m.scheduled_for
        day = moment.astimezone(ZoneInfo(m.location.time_zone)).date()
        counts[(m.location_id, day, m.kind, m.status, "")] += 1
        # A message not sent also counts under its reason, beside the total.
        if m.status == Status.SUPPRESSED and m.reason:
            counts[(m.location_id, day, m.kind, m.status, m.reason)] += 1
    return counts


def kept() -> Counter:
    """What the tally holds, its pending changes added in (as the dashboard reads it)."""
    counts: Counter = Counter()
    for model in (MessageTally, MessageTallyChange):
        for row in model.objects.all():
            counts[(row.location_id, row.day, row.kind, row.status, row.reason)] += row.n
    # Keys that came to zero are no count; a negative one stays, and fails the test.
    return Counter({key: n for key, n in counts.items() if n != 0})


class Writer:
    """Random writes to the outbox, through every path the application uses."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.locations = [
            LocationFactory(slug="t-east", time_zone="America/New_York"),
            LocationFactory(slug="t-west", time_zone="America/Los_Angeles"),
            LocationFactory(slug="t-far", time_zone="Pacific/Auckland"),
        ]
        self.patients = [PatientFactory(home_location=loc) for loc in self.locations]
        self.n = 0

    def _row(self) -> OutboundMessage:
        self.n += 1
        i = self.rng.randrange(len(self.locations))
        # Around local midnight, so that the day depends on the zone.
        at = START + dt.timedelta(
            hours=self.rng.randrange(0, 24 * 20), minutes=self.rng.choice([0, 59])
        )
        status = self.rng.choice(list(Status))
        return OutboundMessage(
            idempotency_key=f"tally-{self.n}",
            kind=self.rng.choice(list(OutboundMessage.Kind)),
            channel="sms",
            patient=self.patients[i],
            location=self.locations[i],
            to="+15125550100",
            sender="+15125550199",
            body="Reminder",
            scheduled_for=at,
            sent_at=at + dt.timedelta(hours=self.rng.choice([0, 3, 30]))
            if status in (Status.SENT, Status.DELIVERED, Status.UNDELIVERED)
            else None,
            status=status,
            reason=self.rng.choice(["", "No SMS consent", "Do not contact"]),
        )

    def step(self) -> str:
        rows = list(OutboundMessage.objects.all())
        action = self.rng.choice(
            ["create", "bulk", "save", "update", "raw", "noop", "delete", "move", "zone"]
        )
        if action == "create" or not rows:
            self._row().save()
        elif action == "bulk":
            OutboundMessage.objects.bulk_create(
                [self._row() for _ in range(self.rng.randint(2, 9))]
            )
        elif action == "save":
            m = self.rng.choice(rows)
            m.status = self.rng.choice(list(Status))
            m.reason = self.rng.choice(["", "Quiet hours"])
            m.save()
        elif action == "update":
            ids = [m.pk for m in self.rng.sample(rows, min(len(rows), 5))]
            OutboundMessage.objects.filter(pk__in=ids).update(
                status=Status.DELIVERED, sent_at=START + dt.timedelta(days=self.rng.randrange(20))
            )
        elif action == "raw":  # as reminders.services marks a send, in plain SQL
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE reminders_outboundmessage SET status = %s, sent_at = %s WHERE id = %s",
                    [Status.SENT, START + dt.timedelta(hours=7), self.rng.choice(rows).pk],
                )
        elif action == "noop":
            OutboundMessage.objects.filter(pk=self.rng.choice(rows).pk).update(provider_id="SMx")
        elif action == "delete":
            OutboundMessage.objects.filter(pk=self.rng.choice(rows).pk).delete()
        elif action == "move":  # replanning moves a pending row to another time
            m = self.rng.choice(rows)
            m.scheduled_for += dt.timedelta(hours=self.rng.choice([-13, 5, 26]))
            m.save(update_fields=["scheduled_for"])
        else:  # a location moves to another time zone
            loc = self.rng.choice(self.locations)
            loc.time_zone = self.rng.choice(["America/Chicago", "Europe/Berlin", "Asia/Tokyo"])
            loc.save(update_fields=["time_zone"])
        return action


@pytest.mark.parametrize("seed", range(4))
def test_the_tally_counts_the_outbox_after_every_kind_of_write(db, seed):
    writer = Writer(seed)
    seen = set()
    for n in range(60):
        seen.add(writer.step())
        assert kept() == expected(), seen
        if n % 7 == 6:
            compact_message_tallies()
            assert not MessageTallyChange.objects.exists()
            assert not MessageTally.objects.filter(n=0).exists()
            assert kept() == expected()
    assert seen >= {"create", "bulk", "save", "update", "raw", "delete", "move", "zone"}


def test_an_update_that_moves_no_count_adds_nothing(db):
    writer = Writer(0)
    writer._row().save()
    compact_message_tallies()
    OutboundMessage.objects.update(provider_id="SM1", updated_at=START, attempts=2)
    assert not MessageTallyChange.objects.exists()


def test_only_a_message_not_sent_keeps_its_reason(db):
    writer = Writer(1)
    m = writer._row()
    m.status, m.reason = Status.CANCELLED, "Appointment cancelled"
    m.save()
    OutboundMessage.objects.filter(pk=m.pk).update(status=Status.SUPPRESSED)
    compact_message_tallies()
    assert [(t.status, t.reason, t.n) for t in MessageTally.objects.order_by("reason")] == [
        ("suppressed", "", 1),
        ("suppressed", "Appointment cancelled", 1),
    ]
    OutboundMessage.objects.filter(pk=m.pk).update(status=Status.FAILED)
    compact_message_tallies()
    assert [(t.status, t.reason, t.n) for t in MessageTally.objects.all()] == [("failed", "", 1)]


def test_truncating_the_outbox_empties_the_tally(db):
    writer = Writer(2)
    for _ in range(5):
        writer.step()
    compact_message_tallies()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE waits for no deferred check
        cursor.execute("TRUNCATE reminders_outboundmessage CASCADE")
    assert kept() == Counter() == expected()


def test_rebuild_counts_the_outbox_again(db, capsys):
    writer = Writer(3)
    for _ in range(20):
        writer.step()
    MessageTally.objects.update(n=99)  # lost, say, by a restore around the triggers
    MessageTallyChange.objects.all().delete()
    call_command("rebuild_message_tallies")
    assert "Message tally rebuilt" in capsys.readouterr().out
    assert kept() == expected()
    assert not MessageTallyChange.objects.exists()
