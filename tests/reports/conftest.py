import datetime as dt

import pytest

from followups.models import ContactAttempt, Followup
from patients.models import Appointment
from reminders.models import InboundMessage, OutboundMessage
from tests.factories import (
    AppointmentFactory,
    FollowupFactory,
    FollowupTypeFactory,
    PatientFactory,
)

NOW = dt.datetime(2026, 3, 20, 15, 0, tzinfo=dt.UTC)  # a Friday


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


class Builder:
    """Hand-built histories: follow-ups, attempts, bookings, messages, replies."""

    def __init__(self) -> None:
        self.recall = FollowupTypeFactory(code="hygiene-recall", name="Hygiene recall")
        self.n = 0

    def followup(self, location, *, due: dt.date, status: str = "open", lapses=None, **kw):
        patient = kw.pop("patient", None) or PatientFactory(home_location=location)
        return FollowupFactory(
            patient=patient,
            location=location,
            followup_type=kw.pop("followup_type", self.recall),
            due_date=due,
            lapses_on=lapses or due + dt.timedelta(days=180),
            status=status,
            **kw,
        )

    def attempt(self, followup, at: dt.datetime, staff=None):
        return ContactAttempt.objects.create(
            followup=followup, channel="call", outcome="no_answer", staff=staff, attempted_at=at
        )

    def book(self, followup, *, recorded: dt.datetime, status: str = "scheduled"):
        """The follow-up scheduled on a visit recorded (created) at `recorded`."""
        visit = AppointmentFactory(
            patient=followup.patient,
            location=followup.location,
            start=recorded + dt.timedelta(days=10),
        )
        Appointment.objects.filter(pk=visit.pk).update(created_at=recorded)
        Followup.objects.filter(pk=followup.pk).update(scheduled_appointment=visit, status=status)
        followup.refresh_from_db()
        return visit

    def message(self, location, *, status: str, at: dt.datetime, sent: bool = True, **kw):
        self.n += 1
        patient = kw.pop("patient", None) or PatientFactory(home_location=location)
        return OutboundMessage.objects.create(
            idempotency_key=f"report-test-{self.n}",
            kind=kw.pop("kind", "appointment_reminder"),
            channel="sms",
            patient=patient,
            recipient=patient,
            location=location,
            to="+15125550100",
            sender="+15125550199",
            body="Reminder",
            scheduled_for=at,
            sent_at=at if sent else None,
            status=status,
            **kw,
        )

    def reply(self, location, *, action: str, at: dt.datetime, read=None, appointment=None):
        self.n += 1
        return InboundMessage.objects.create(
            provider_id=f"SMtest{self.n}",
            from_number="+15125550100",
            to_number="+15125550199",
            body="C" if action == "confirmed" else "hello",
            location=location,
            action=action,
            received_at=at,
            read_at=read,
            confirmed_appointment=appointment,
        )


@pytest.fixture
def build(db) -> Builder:
    return Builder()
