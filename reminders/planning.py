"""Planning the outbox: which messages an appointment or a follow-up should cause.

Planning writes one outbox row per step of the schedule (appointments) or the
outreach plan (recalls), keyed so that replanning finds the same row again:

- a rescheduled visit moves its pending rows, a cancelled one cancels them;
- a follow-up that gets booked suppresses its recall steps ("future appointment
  booked"), one that reopens revives them;
- a patient whose consent, number or status changes has their pending rows
  re-checked.

Rows that cannot go out are still written, as "suppressed" with the reason in
plain words, so staff see what would have been sent and why it was not. The same
checks run again just before sending (reminders.services.message_send), because a
patient may text STOP between planning and sending.
"""

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from followups.models import Followup
from locations.models import Location
from patients.models import Appointment, ChannelConsent, Patient
from reminders.models import (
    Channel,
    Kind,
    OutboundMessage,
    OutreachPlan,
    ReminderSchedule,
    StepChannel,
)
from reminders.templating import render

Status = OutboundMessage.Status
# Rows planning may still change: nobody has claimed them for sending. A cancelled
# row comes back if its visit is restored or its follow-up reopened.
PENDING = [Status.PLANNED, Status.SUPPRESSED, Status.CANCELLED]
HELD = (Status.SUPPRESSED, Status.CANCELLED)
FALLBACK = ":email-fallback"
DEFAULT_APPOINTMENT_STEPS = [
    {"minutes_before": 7 * 24 * 60, "channel": StepChannel.EMAIL},
    {"minutes_before": 2 * 24 * 60, "channel": StepChannel.SMS},
    {"minutes_before": 2 * 60, "channel": StepChannel.SMS},
]
# Recall steps go out at this local time on their day (then quiet hours apply).
RECALL_SEND_TIME = dt.time(10)
BOOKED = (Appointment.Status.SCHEDULED, Appointment.Status.CONFIRMED)
KIND_FIELD: dict[str, str] = {
    Kind.APPOINTMENT_REMINDER: "appointment_reminders",
    Kind.RECALL: "recall_outreach",
}
KIND_WORDS: dict[str, str] = {
    Kind.APPOINTMENT_REMINDER: "appointment reminders",
    Kind.RECALL: "recall outreach",
}


def appointment_steps(appointment: Appointment) -> list[dict]:
    schedules = {
        s.appointment_type_id: s
        for s in ReminderSchedule.objects.filter(
            location_id=appointment.location_id, is_active=True
        ).filter(appointment_type__in=[appointment.appointment_type_id])
        | ReminderSchedule.objects.filter(
            location_id=appointment.location_id, is_active=True, appointment_type__isnull=True
        )
    }
    schedule = schedules.get(appointment.appointment_type_id) or schedules.get(None)
    return schedule.steps if schedule else DEFAULT_APPOINTMENT_STEPS


def outreach_plan(followup: Followup) -> OutreachPlan | None:
    name = followup.rule.outreach_plan if followup.rule else ""
    if not name:
        return None
    return OutreachPlan.objects.filter(name=name, is_active=True).first()


def recipient_for(patient: Patient, location: Location) -> Patient:
    """The household's primary contact receives the family's messages, if grouping is on."""
    household = patient.household
    if (
        location.household_grouping
        and household is not None
        and household.primary_contact_id
        and household.primary_contact_id != patient.pk
    ):
        primary = household.primary_contact
        if primary is not None and primary.status == Patient.Status.ACTIVE:
            return primary
    return patient


def _consents(patient: Patient) -> dict[str, ChannelConsent]:
    return {c.channel: c for c in patient.consents.all()}


def channel_blocker(*, recipient: Patient, location: Location, kind: str, channel: str) -> str:
    """Why this recipient cannot get this kind of message on this channel ("" if they can)."""
    label = Channel(channel).label
    if channel == Channel.SMS:
        if not recipient.mobile_phone:
            return "No mobile number"
        if recipient.sms_unusable_reason:
            return f"Mobile number can't receive SMS ({recipient.sms_unusable_reason})"
        if recipient.sms_opted_out_at:
            return "Opted out of SMS (replied STOP)"
        if not (location.sms_from_number or location.sms_messaging_service_sid):
            return f"{location.name} has no SMS number set up"
    elif not recipient.email:
        return "No email address"
    consent = _consents(recipient).get(channel)
    if consent is None:
        return f"No {label} consent"
    if consent.status != ChannelConsent.Status.GRANTED:
        return f"{label} consent refused"
    if kind in KIND_FIELD and not getattr(consent, KIND_FIELD[kind]):
        return f"Refused {KIND_WORDS[kind]} by {label}"
    return ""


def person_blocker(*, patient: Patient, recipient: Patient, location: Location, kind: str) -> str:
    """Why nobody may message about this patient at all ("" if they may)."""
    if kind == Kind.APPOINTMENT_REMINDER and not location.module_appointment_reminders:
        return f"Appointment reminders are switched off at {location.name}"
    if kind == Kind.RECALL and not location.module_recalls:
        return f"Recalls are switched off at {location.name}"
    for person in dict.fromkeys([patient, recipient]):
        if person.status == Patient.Status.DECEASED:
            return "Deceased"
        if person.status != Patient.Status.ACTIVE:
            return f"Patient is {person.get_status_display().lower()}"
        if person.do_not_contact:
            return "Do not contact"
    if recipient.preferred_channel == Patient.PreferredChannel.NONE:
        return "Prefers no contact"
    return ""


@dataclass
class Route:
    channel: str
    blocker: str


def route(
    *, patient: Patient, recipient: Patient, location: Location, kind: str, spec: str
) -> Route:
    """The channel a step uses and, if it cannot go out, why.

    "Preferred channel" steps follow the recipient's preference and fall back to
    the other channel when the preferred one is blocked (no number, refused).
    """
    blocker = person_blocker(patient=patient, recipient=recipient, location=location, kind=kind)
    if spec != StepChannel.PREFERRED:
        channel = spec
        return Route(
            channel,
            blocker
            or channel_blocker(recipient=recipient, location=location, kind=kind, channel=channel),
        )
    preferred = recipient.preferred_channel
    if preferred == Patient.PreferredChannel.CALL:
        return Route(Channel.SMS, blocker or "Prefers phone calls")
    first = preferred if preferred in Channel.values else Channel.SMS
    order = [first, Channel.EMAIL if first == Channel.SMS else Channel.SMS]
    reasons = [
        channel_blocker(recipient=recipient, location=location, kind=kind, channel=c) for c in order
    ]
    if blocker:
        return Route(order[0], blocker)
    for channel, reason in zip(order, reasons, strict=True):
        if not reason:
            return Route(channel, "")
    return Route(order[0], reasons[0])


def address(recipient: Patient, channel: str) -> str:
    return recipient.mobile_phone if channel == Channel.SMS else recipient.email


def sender_for(location: Location, channel: str) -> str:
    if channel == Channel.SMS:
        return location.sms_messaging_service_sid or location.sms_from_number
    return location.email_from or settings.DEFAULT_FROM_EMAIL


def local_label(location: Location, when: dt.datetime) -> str:
    local = when.astimezone(location.tz)
    return f"{local:%a %b} {local.day}, {local:%H:%M}"


def deferral_note(location: Location, when: dt.datetime) -> str:
    return f"Quiet hours → deferred to {local_label(location, when)}"


def _write(
    row: OutboundMessage | None,
    *,
    key: str,
    step: str,
    kind: str,
    patient: Patient,
    location: Location,
    at: dt.datetime,
    when: dt.datetime | dt.date,
    spec: str,
    latest: dt.datetime | None = None,
    **links,
) -> OutboundMessage:
    """Create or update the pending row of one step, deciding planned vs suppressed."""
    recipient = recipient_for(patient, location)
    way = route(patient=patient, recipient=recipient, location=location, kind=kind, spec=spec)
    scheduled = location.next_send_time(at)
    reason = way.blocker
    if not reason and scheduled != at:
        reason = deferral_note(location, scheduled)
        if latest is not None and scheduled >= latest:
            way.blocker = reason = "Quiet hours: no time left to send before the visit"
    text = render(
        kind=kind,
        channel=way.channel,
        language=recipient.language,
        location=location,
        first_name=patient.preferred_name or patient.first_name,
        when=when,
    )
    row = row or OutboundMessage(kind=kind, step=step, patient=patient, location=location, **links)
    row.idempotency_key = key
    row.recipient = recipient
    row.channel = way.channel
    row.to = address(recipient, way.channel)
    row.sender = sender_for(location, way.channel)
    row.subject, row.body = text.subject, text.body
    row.scheduled_for = scheduled
    row.status = Status.SUPPRESSED if way.blocker else Status.PLANNED
    row.reason = reason
    row.save()
    return row


def _leftovers(pending: dict[str, OutboundMessage]) -> list[OutboundMessage]:
    """Pending rows no step claimed — but not email fallbacks, which stand in for an
    SMS the number could not take and are cancelled only with their visit."""
    return [row for step, row in pending.items() if not step.endswith(FALLBACK)]


def _cancel(rows, reason: str) -> None:
    for row in rows:
        OutboundMessage.objects.filter(pk=row.pk, status__in=PENDING).update(
            status=Status.CANCELLED, reason=reason, updated_at=timezone.now()
        )


@transaction.atomic
def appointment_replan(appointment: Appointment, *, now: dt.datetime | None = None) -> None:
    """Bring the appointment's reminders in line with the visit as it is now."""
    now = now or timezone.now()
    mine = OutboundMessage.objects.filter(
        appointment=appointment, kind=Kind.APPOINTMENT_REMINDER
    ).select_for_update()
    pending: dict[str, OutboundMessage] = {row.step: row for row in mine.filter(status__in=PENDING)}
    if appointment.status not in BOOKED or appointment.start <= now:
        reason = (
            f"Appointment {appointment.get_status_display().lower()}"
            if appointment.status not in BOOKED
            else "The appointment time has passed"
        )
        _cancel(pending.values(), reason)
        return
    done = set(mine.exclude(status__in=PENDING).values_list("idempotency_key", flat=True))
    patient = Patient.objects.select_related("household__primary_contact").get(
        pk=appointment.patient_id
    )
    location = appointment.location
    for step in appointment_steps(appointment):
        minutes, spec = step["minutes_before"], step["channel"]
        step_id = f"{minutes}m:{spec}"
        key = f"appt:{appointment.pk}:{appointment.start.astimezone(dt.UTC):%Y%m%dT%H%MZ}:{step_id}"
        row: OutboundMessage | None = pending.pop(step_id, None)
        if key in done:
            # Went out for this very visit time (moved away and back): once is enough.
            _cancel([row] if row else [], "Already sent for this appointment time")
            continue
        at = appointment.start - dt.timedelta(minutes=minutes)
        if at < now and (row is None or row.status in HELD):
            # Booked after this step's time, or held back until it passed: never late.
            continue
        _write(
            row,
            key=key,
            step=step_id,
            kind=Kind.APPOINTMENT_REMINDER,
            patient=patient,
            location=location,
            at=max(at, now) if row is not None else at,
            when=appointment.start,
            spec=spec,
            latest=appointment.start,
            appointment=appointment,
        )
    _cancel(_leftovers(pending), "No longer in the reminder schedule")


@transaction.atomic
def followup_replan(followup: Followup, *, now: dt.datetime | None = None) -> None:
    """Plan (or suppress, or cancel) the recall outreach of one follow-up."""
    now = now or timezone.now()
    mine = OutboundMessage.objects.filter(followup=followup, kind=Kind.RECALL).select_for_update()
    pending: dict[str, OutboundMessage] = {row.step: row for row in mine.filter(status__in=PENDING)}
    if followup.status not in (Followup.Status.OPEN, Followup.Status.CONTACTED):
        if followup.status == Followup.Status.SCHEDULED:
            for held in pending.values():
                if held.status == Status.PLANNED or held.reason != "Future appointment booked":
                    held.status, held.reason = Status.SUPPRESSED, "Future appointment booked"
                    held.save(update_fields=["status", "reason", "updated_at"])
            return
        _cancel(pending.values(), f"Follow-up {followup.get_status_display().lower()}")
        return
    plan = outreach_plan(followup)
    if plan is None:
        _cancel(pending.values(), "No outreach plan for this follow-up")
        return
    done = set(mine.exclude(status__in=PENDING).values_list("idempotency_key", flat=True))
    patient = Patient.objects.select_related("household__primary_contact").get(
        pk=followup.patient_id
    )
    location = followup.location
    start_day = max(followup.due_date, followup.snoozed_until or followup.due_date)
    for step in plan.steps:
        days, spec = step["days"], step["channel"]
        step_id = f"{days}d:{spec}"
        key = f"recall:{followup.pk}:{followup.due_date:%Y%m%d}:{step_id}"
        row = pending.pop(step_id, None)
        if key in done:
            _cancel([row] if row else [], "Already sent for this due date")
            continue
        day = followup.due_date + dt.timedelta(days=days)
        if followup.snoozed_until and day < start_day:
            day = start_day
        at = dt.datetime.combine(day, RECALL_SEND_TIME, tzinfo=location.tz).astimezone(dt.UTC)
        if at < now and (row is None or row.status in HELD):
            continue  # a step whose day passed (e.g. while booked) is not sent late
        _write(
            row,
            key=key,
            step=step_id,
            kind=Kind.RECALL,
            patient=patient,
            location=location,
            at=max(at, now) if row is not None else at,
            when=followup.due_date,
            spec=spec,
            followup=followup,
        )
    _cancel(_leftovers(pending), "No longer in the outreach plan")


def patient_replan(patient: Patient, *, now: dt.datetime | None = None) -> None:
    """Re-check everything pending for a patient (and the family they receive for)."""
    now = now or timezone.now()
    subjects = {patient.pk}
    if patient.household_id:
        subjects |= set(
            Patient.objects.filter(household_id=patient.household_id).values_list("pk", flat=True)
        )
    subjects |= set(
        OutboundMessage.objects.filter(recipient=patient, status__in=PENDING).values_list(
            "patient_id", flat=True
        )
    )
    for appointment in Appointment.objects.filter(
        patient_id__in=subjects, status__in=BOOKED, start__gt=now
    ).select_related("location", "appointment_type"):
        appointment_replan(appointment, now=now)
    for followup in Followup.objects.filter(
        patient_id__in=subjects,
        status__in=[Followup.Status.OPEN, Followup.Status.CONTACTED, Followup.Status.SCHEDULED],
    ).select_related("rule", "location"):
        followup_replan(followup, now=now)


def plan_all(*, locations=None, now: dt.datetime | None = None) -> int:
    """Plan every upcoming visit and open recall, e.g. after a bulk load or a switch-on.

    Returns how many appointments and follow-ups were planned.
    """
    now = now or timezone.now()
    appointments = Appointment.objects.filter(status__in=BOOKED, start__gt=now)
    followups = Followup.objects.filter(
        status__in=[Followup.Status.OPEN, Followup.Status.CONTACTED, Followup.Status.SCHEDULED]
    ).exclude(rule__outreach_plan="")
    if locations is not None:
        appointments = appointments.filter(location__in=locations)
        followups = followups.filter(location__in=locations)
    count = 0
    for appointment in appointments.select_related("location", "appointment_type").iterator():
        appointment_replan(appointment, now=now)
        count += 1
    for followup in followups.select_related("rule", "location").iterator():
        followup_replan(followup, now=now)
        count += 1
    return count
