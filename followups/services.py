"""Every write to follow-ups: from appointment events, by hand, attempts, snooze, dismiss.

Appointment changes reach this module through `appointment_changed`, which every
writer of appointments calls (patients.services for staff edits; imports and the
API later). All writes are single-row saves, so django-auditlog records them.
"""

import datetime as dt

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from followups.models import (
    ACTIVE_STATUSES,
    CadenceRule,
    ContactAttempt,
    Discharge,
    Followup,
    FollowupType,
)
from locations.models import Location
from patients.models import Appointment, Patient

BOOKED = (Appointment.Status.SCHEDULED, Appointment.Status.CONFIRMED)


def _lapse_days(rule: CadenceRule | None) -> int:
    return rule.lapse_after_days if rule else settings.FOLLOWUP_DEFAULT_LAPSE_DAYS


def rules_for(*, event: str, location: Location, appointment_type=None) -> QuerySet[CadenceRule]:
    """Active rules for `event` at `location` (and, for completions, the visit's type)."""
    rules = CadenceRule.objects.filter(is_active=True, event=event).filter(
        Q(all_locations=True) | Q(locations=location)
    )
    if appointment_type is not None:
        rules = rules.filter(trigger_types=appointment_type)
    return rules.select_related("followup_type").distinct()


def rule_for_type(*, followup_type: FollowupType, location: Location) -> CadenceRule | None:
    """The rule whose cadence a hand-made follow-up of this type follows, if any."""
    return (
        CadenceRule.objects.filter(is_active=True, followup_type=followup_type)
        .filter(Q(all_locations=True) | Q(locations=location))
        .order_by("pk")
        .first()
    )


def _satisfying_booking(followup: Followup) -> Appointment | None:
    """The patient's next booked visit that would satisfy this follow-up, if any."""
    if followup.rule is None:
        return None
    return (
        Appointment.objects.filter(
            patient_id=followup.patient_id,
            status__in=BOOKED,
            start__gt=timezone.now(),
            appointment_type__in=followup.rule.satisfying_types.all(),
        )
        .order_by("start")
        .first()
    )


def _active(patient_id: int, followup_type_id: int) -> Followup | None:
    return (
        Followup.objects.select_for_update()
        .filter(
            patient_id=patient_id, followup_type_id=followup_type_id, status__in=ACTIVE_STATUSES
        )
        .first()
    )


@transaction.atomic
def followup_from_event(
    *,
    patient: Patient,
    location: Location,
    rule: CadenceRule,
    event_date: dt.date,
    source_appointment: Appointment | None = None,
) -> Followup:
    """Start (or move) the follow-up a rule asks for after an event on `event_date`.

    One active follow-up per patient and type: a newer event moves the due date of
    the existing one instead of adding another. Two workers racing here meet the
    database constraint; the loser re-reads and moves the winner's row.
    """
    due = rule.due_after(event_date)
    for _ in range(2):
        existing = _active(patient.pk, rule.followup_type_id)
        if existing is not None:
            if due > existing.due_date:
                existing.due_date = due
                existing.lapses_on = due + dt.timedelta(days=rule.lapse_after_days)
                existing.rule = rule
                existing.source_appointment = source_appointment
                existing.save()
            return existing
        followup = Followup(
            patient=patient,
            followup_type=rule.followup_type,
            location=location,
            rule=rule,
            due_date=due,
            lapses_on=due + dt.timedelta(days=rule.lapse_after_days),
            source=Followup.Source.RULE,
            source_appointment=source_appointment,
        )
        booking = _satisfying_booking(followup)
        if booking is not None:
            # Never chased while a matching visit is already on the books.
            followup.status = Followup.Status.SCHEDULED
            followup.scheduled_appointment = booking
        try:
            with transaction.atomic():
                followup.save()
            return followup
        except IntegrityError:
            continue  # another transaction created it first: move that one instead
    raise RuntimeError("could not create or find the active follow-up")  # pragma: no cover


def _close(followup: Followup, *, status: str, appointment: Appointment | None = None) -> None:
    followup.status = status
    followup.closed_at = timezone.now()
    if appointment is not None:
        followup.scheduled_appointment = appointment
    followup.save()


def _reopen_status(followup: Followup) -> str:
    return Followup.Status.CONTACTED if followup.attempts.exists() else Followup.Status.OPEN


@transaction.atomic
def appointment_changed(*, appointment: Appointment, previous_status: str | None = None) -> None:
    """Bring the patient's follow-ups in line with one appointment's new state.

    - booked (scheduled/confirmed, in the future): matching follow-ups become
      "scheduled" and leave the worklists;
    - completed: matching follow-ups are done, and rules triggered by this visit
      type start the next cycle;
    - cancelled or no-show: follow-ups waiting on it reopen — unless another
      matching visit is still booked.
    """
    status = appointment.status
    active = Followup.objects.select_for_update().filter(
        patient_id=appointment.patient_id,
        status__in=ACTIVE_STATUSES,
        rule__satisfying_types=appointment.appointment_type_id,
    )
    if status in BOOKED and appointment.start > timezone.now():
        for followup in active.exclude(status=Followup.Status.SCHEDULED):
            followup.status = Followup.Status.SCHEDULED
            followup.scheduled_appointment = appointment
            followup.save()
    elif status == Appointment.Status.COMPLETED and previous_status != status:
        for followup in active:
            _close(followup, status=Followup.Status.DONE, appointment=appointment)
        event_date = appointment.start.astimezone(appointment.location.tz).date()
        for rule in rules_for(
            event=CadenceRule.Event.COMPLETED,
            location=appointment.location,
            appointment_type=appointment.appointment_type,
        ):
            followup_from_event(
                patient=appointment.patient,
                location=appointment.location,
                rule=rule,
                event_date=event_date,
                source_appointment=appointment,
            )
    if status not in BOOKED or appointment.start <= timezone.now():
        # This visit no longer holds a place for anyone: reopen what waited on it.
        waiting = Followup.objects.select_for_update().filter(
            scheduled_appointment=appointment, status=Followup.Status.SCHEDULED
        )
        for followup in waiting:
            booking = _satisfying_booking(followup)
            followup.scheduled_appointment = booking
            followup.status = Followup.Status.SCHEDULED if booking else _reopen_status(followup)
            followup.save()


@transaction.atomic
def discharge_record(*, patient: Patient, location: Location, on: dt.date, by) -> Discharge:
    """Record the end of an episode of care and start the rules that follow discharge."""
    discharge = Discharge.objects.create(
        patient=patient, location=location, discharged_on=on, recorded_by=by
    )
    for rule in rules_for(event=CadenceRule.Event.DISCHARGED, location=location):
        followup_from_event(patient=patient, location=location, rule=rule, event_date=on)
    return discharge


@transaction.atomic
def followup_create(
    *,
    patient: Patient,
    followup_type: FollowupType,
    location: Location,
    due_date: dt.date,
    reason: str,
    by,
) -> Followup:
    """A follow-up added by hand from the patient page."""
    if _active(patient.pk, followup_type.pk) is not None:
        raise ValidationError(
            {
                "followup_type": f"{patient.display_name} already has an open {followup_type} "
                "follow-up. Change its due date instead."
            }
        )
    rule = rule_for_type(followup_type=followup_type, location=location)
    followup = Followup(
        patient=patient,
        followup_type=followup_type,
        location=location,
        rule=rule,
        due_date=due_date,
        lapses_on=due_date + dt.timedelta(days=_lapse_days(rule)),
        source=Followup.Source.MANUAL,
        reason=reason,
        assigned_to=None,
    )
    booking = _satisfying_booking(followup)
    if booking is not None:
        followup.status = Followup.Status.SCHEDULED
        followup.scheduled_appointment = booking
    try:
        with transaction.atomic():
            followup.save()
    except IntegrityError as exc:
        raise ValidationError(
            {
                "followup_type": f"{patient.display_name} already has an open {followup_type} "
                "follow-up."
            }
        ) from exc
    return followup


@transaction.atomic
def followup_log_attempt(
    *,
    followup: Followup,
    channel: str,
    outcome: str,
    note: str = "",
    phone: str = "",
    by,
    at: dt.datetime | None = None,
) -> ContactAttempt:
    """Record a contact attempt and what it means for the follow-up and the patient.

    "Wrong number" removes the number from the patient's record and "asked not to
    be contacted" sets do-not-contact, in the same transaction, so the next person
    on the worklist does not call again.
    """
    followup = (
        Followup.objects.select_for_update().select_related("rule", "patient").get(pk=followup.pk)
    )
    if not followup.is_active:
        raise ValidationError(f"This follow-up is {followup.get_status_display().lower()}.")
    attempt = ContactAttempt.objects.create(
        followup=followup,
        channel=channel,
        outcome=outcome,
        note=note,
        phone=phone,
        staff=by,
        attempted_at=at or timezone.now(),
    )
    patient = followup.patient
    Outcome = ContactAttempt.Outcome
    if outcome == Outcome.WRONG_NUMBER:
        changed = [
            f for f in ("mobile_phone", "home_phone") if phone and getattr(patient, f) == phone
        ]
        if not phone:
            # Which number was wrong is unknown: the one the worklist offers first.
            changed = [next((f for f in ("mobile_phone", "home_phone") if getattr(patient, f)), "")]
        for field in filter(None, changed):
            setattr(patient, field, "")
        if any(changed):
            if (
                patient.preferred_channel == Patient.PreferredChannel.SMS
                and not patient.mobile_phone
            ):
                patient.preferred_channel = (
                    Patient.PreferredChannel.EMAIL
                    if patient.email
                    else Patient.PreferredChannel.CALL
                )
            patient.save()
    elif outcome == Outcome.DO_NOT_CONTACT:
        patient.do_not_contact = True
        patient.do_not_contact_reason = (
            f"Asked not to be contacted ({attempt.get_channel_display().lower()}, "
            f"{timezone.localdate(attempt.attempted_at):%b %-d, %Y})"
        )
        patient.save()
        followup.dismissed_reason = "Patient asked not to be contacted"
        _close(followup, status=Followup.Status.DISMISSED)
        return attempt

    if outcome == Outcome.BOOKED:
        followup.status = Followup.Status.SCHEDULED
        followup.scheduled_appointment = _satisfying_booking(followup)
    elif outcome == Outcome.DECLINED:
        followup.status = Followup.Status.CONTACTED
    else:
        followup.status = Followup.Status.CONTACTED
        max_attempts = (
            followup.rule.max_attempts if followup.rule else settings.FOLLOWUP_DEFAULT_MAX_ATTEMPTS
        )
        if followup.attempts.count() >= max_attempts:
            followup.status = Followup.Status.LAPSED
            followup.closed_at = timezone.now()
    followup.save()
    return attempt


@transaction.atomic
def followup_snooze(*, followup: Followup, until: dt.date | None, by) -> Followup:
    """Hide the follow-up from worklists until a date (None wakes it now)."""
    followup.snoozed_until = until
    followup.save()
    return followup


@transaction.atomic
def followup_dismiss(*, followup: Followup, reason: str, by) -> Followup:
    if not reason.strip():
        raise ValidationError(
            {"reason": "Say why, so colleagues know whether to pick it up again."}
        )
    followup.dismissed_reason = reason.strip()
    _close(followup, status=Followup.Status.DISMISSED)
    return followup


@transaction.atomic
def followup_reopen(*, followup: Followup, by) -> Followup:
    """Undo a dismissal or a lapse: the follow-up is back on the worklists."""
    if followup.is_active:
        return followup
    if _active(followup.patient_id, followup.followup_type_id) is not None:
        raise ValidationError(
            f"{followup.patient.display_name} already has another open {followup.followup_type} "
            "follow-up."
        )
    followup.status = _reopen_status(followup)
    followup.dismissed_reason = ""
    followup.closed_at = None
    if followup.lapses_on <= timezone.localdate():
        # Reopening a lapsed follow-up gives it a fresh window before it lapses again.
        followup.lapses_on = timezone.localdate() + dt.timedelta(days=_lapse_days(followup.rule))
    followup.save()
    return followup


def followups_lapse_due(*, today: dt.date | None = None) -> int:
    """Mark open follow-ups past their "lapsed after" date as lapsed (beat, daily)."""
    from practicecrm.audit import update_audited

    today = today or timezone.localdate()
    due = Followup.objects.filter(
        status__in=[Followup.Status.OPEN, Followup.Status.CONTACTED], lapses_on__lte=today
    )
    return update_audited(due, status=Followup.Status.LAPSED, closed_at=timezone.now())
