"""Every write to follow-ups: from appointment events, by hand, attempts, snooze, dismiss.

Appointment changes reach this module through `appointment_changed`, which every
writer of appointments calls (patients.services for staff edits; imports and the
API later). Writes are single-row saves, which django-auditlog records, except the
bulk ones (lapse, backfill), which go through practicecrm.audit's audited helpers.
"""

import datetime as dt
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
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
from patients.models import Appointment, AppointmentType, Patient

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


def _cycle_start(followup: Followup) -> dt.datetime:
    """When the follow-up's cycle began: its source visit, else its rule's event day."""
    if followup.source_appointment is not None:
        return followup.source_appointment.start
    if followup.rule is not None:
        day = followup.due_date - followup.rule.interval
        return dt.datetime.combine(day, dt.time.min, tzinfo=followup.location.tz)
    return followup.created_at


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
    # of=("self",): a plain FOR UPDATE would also lock the joined rule row, and every
    # completion of that type, for any patient, would wait for this transaction.
    active = Followup.objects.select_for_update(of=("self",)).filter(
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
        for followup in active.select_related("source_appointment", "rule", "location"):
            # An old visit entered late does not close the current cycle.
            if appointment.start >= _cycle_start(followup):
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
    # Re-check what waited on this visit: cancelled, no-show, moved into the past
    # or changed to a type that no longer satisfies the rule all release it.
    waiting = Followup.objects.select_for_update(of=("self",)).filter(
        scheduled_appointment=appointment, status=Followup.Status.SCHEDULED
    )
    for followup in waiting.select_related("rule"):
        booking = _satisfying_booking(followup)
        if booking != appointment:
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
    source: str = Followup.Source.MANUAL,
) -> Followup:
    """A follow-up added by hand from the patient page (or by an import: `source`)."""
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
        source=source,
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
        Followup.objects.select_for_update(of=("self",))
        .select_related("rule", "patient")
        .get(pk=followup.pk)
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
    # Only a call, voicemail or text reaches a number that can turn out wrong.
    if outcome == Outcome.WRONG_NUMBER and channel in ("call", "voicemail", "sms"):
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

    booking = _satisfying_booking(followup)
    if booking is not None:
        # Never chased while a satisfying visit is booked: an attempt logged from the
        # patient page meanwhile must not put the follow-up back on the worklist.
        followup.status = Followup.Status.SCHEDULED
        followup.scheduled_appointment = booking
    elif outcome == Outcome.BOOKED:
        # Booked in the scheduler, not here yet: off the worklist for a week while
        # the appointment arrives (which marks it scheduled); back on it if it never
        # does, rather than waiting forever on a booking nobody recorded.
        followup.status = Followup.Status.CONTACTED
        followup.snoozed_until = timezone.localdate() + dt.timedelta(
            days=settings.FOLLOWUP_BOOKING_GRACE_DAYS
        )
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
    if not followup.is_active:
        raise ValidationError(f"This follow-up is {followup.get_status_display().lower()}.")
    followup.snoozed_until = until
    followup.save()
    return followup


@transaction.atomic
def followup_assign(*, followup: Followup, to, by) -> Followup:
    """Give the follow-up to one staff member (None: to nobody in particular)."""
    if not followup.is_active:
        raise ValidationError(f"This follow-up is {followup.get_status_display().lower()}.")
    followup.assigned_to = to
    followup.save()
    return followup


@transaction.atomic
def followup_dismiss(*, followup: Followup, reason: str, by) -> Followup:
    if not followup.is_active:
        raise ValidationError(f"This follow-up is already {followup.get_status_display().lower()}.")
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
    if followup.status not in (Followup.Status.DISMISSED, Followup.Status.LAPSED):
        raise ValidationError(f"A {followup.get_status_display().lower()} follow-up stays closed.")
    if _active(followup.patient_id, followup.followup_type_id) is not None:
        raise ValidationError(
            f"{followup.patient.display_name} already has another open {followup.followup_type} "
            "follow-up."
        )
    # A visit booked while it was closed keeps it off the worklists, as at creation.
    booking = _satisfying_booking(followup)
    followup.scheduled_appointment = booking
    followup.status = Followup.Status.SCHEDULED if booking else _reopen_status(followup)
    followup.dismissed_reason = ""
    followup.closed_at = None
    if followup.lapses_on <= timezone.localdate():
        # Reopening a lapsed follow-up gives it a fresh window before it lapses again.
        followup.lapses_on = timezone.localdate() + dt.timedelta(days=_lapse_days(followup.rule))
    followup.save()
    return followup


STALE_BOOKING = dt.timedelta(days=2)


def followups_release_stale_bookings(*, now: dt.datetime | None = None) -> int:
    """Reopen follow-ups still waiting on a visit that passed without being recorded.

    A booked visit that nobody marked completed, cancelled or no-show would keep its
    follow-up "scheduled" — off every worklist — forever; after two days it is
    released (or moved to the patient's next matching booking).
    """
    now = now or timezone.now()
    released = 0
    stale = Followup.objects.filter(
        status=Followup.Status.SCHEDULED, scheduled_appointment__start__lt=now - STALE_BOOKING
    ).values_list("pk", flat=True)
    for pk in stale:
        with transaction.atomic():
            followup = (
                Followup.objects.select_for_update(of=("self",)).select_related("rule").get(pk=pk)
            )
            booking = _satisfying_booking(followup)
            followup.scheduled_appointment = booking
            followup.status = Followup.Status.SCHEDULED if booking else _reopen_status(followup)
            followup.save()
            released += 1
    return released


def followups_lapse_due(*, today: dt.date | None = None) -> int:
    """Mark open follow-ups past their "lapsed after" date as lapsed (beat, hourly).

    "Past" is judged on each location's own calendar, so Seattle's follow-ups do not
    lapse at Boston's midnight. `today` overrides that for every location (tests).
    """
    from practicecrm.audit import update_audited

    lapsed = 0
    for location in Location.objects.all():
        day = today or dt.datetime.now(tz=location.tz).date()
        due = Followup.objects.filter(
            location=location,
            status__in=[Followup.Status.OPEN, Followup.Status.CONTACTED],
            lapses_on__lte=day,
        )
        # followup_type: each entry's text names it; one join instead of a query a row.
        lapsed += update_audited(
            due.select_related("followup_type"),
            status=Followup.Status.LAPSED,
            closed_at=timezone.now(),
        )
    return lapsed


# --- Backfill ---------------------------------------------------------------------------

_VISIT, _DISCHARGE = 0, 1


class _HistoryReplay:
    """`appointment_changed`, `discharge_record` and `followup_from_event`, in memory.

    Mirrors them step for step for a history saved one event at a time, each visit
    once with the status it has now: the same rules (by name, as `rules_for` lists
    them), the same due dates, the same "one active follow-up per type" and the
    same bookings found by `_satisfying_booking`.
    """

    def __init__(self, *, now: dt.datetime) -> None:
        self.now = now
        self.rules = list(
            CadenceRule.objects.filter(is_active=True)
            .select_related("followup_type")
            .prefetch_related("trigger_types", "satisfying_types", "locations")
            .order_by("name")
        )
        self.triggers = {r.pk: {t.pk for t in r.trigger_types.all()} for r in self.rules}
        self.satisfying = {r.pk: {t.pk for t in r.satisfying_types.all()} for r in self.rules}
        self.scope = {
            r.pk: None if r.all_locations else {loc.pk for loc in r.locations.all()}
            for r in self.rules
        }
        self.tz = {loc.pk: loc.tz for loc in Location.objects.all()}

    def patient(self, patient_id: int, events: list[tuple]) -> list[Followup]:
        """Every follow-up the patient's events would have created, in creation order."""
        self.patient_id = patient_id
        self.active: dict[int, Followup] = {}  # by follow-up type
        self.booked: list[tuple[dt.datetime, int, int]] = []  # (start, pk, type) ahead
        self.created: list[Followup] = []
        for when, kind, pk, location_id, type_id, status in sorted(events, key=lambda e: e[:3]):
            if kind == _DISCHARGE:
                on = status  # a discharge carries its date in that slot
                for rule in self._rules(CadenceRule.Event.DISCHARGED, location_id):
                    self._from_event(rule, on, location_id, None)
            else:
                self._visit(pk, location_id, type_id, when, status)
        return self.created

    def _rules(self, event: str, location_id: int, type_id: int | None = None):
        for rule in self.rules:
            scope = self.scope[rule.pk]
            if rule.event != event or (scope is not None and location_id not in scope):
                continue
            if type_id is None or type_id in self.triggers[rule.pk]:
                yield rule

    def _visit(self, pk: int, location_id: int, type_id: int, start: dt.datetime, status: str):
        satisfied = [
            f
            for f in self.active.values()
            if f.rule_id is not None and type_id in self.satisfying[f.rule_id]
        ]
        if status in BOOKED and start > self.now:
            self.booked.append((start, pk, type_id))
            for followup in satisfied:
                if followup.status != Followup.Status.SCHEDULED:
                    followup.status = Followup.Status.SCHEDULED
                    followup.scheduled_appointment_id = pk
        elif status == Appointment.Status.COMPLETED:
            for followup in satisfied:
                followup.status = Followup.Status.DONE
                followup.closed_at = self.now
                followup.scheduled_appointment_id = pk
                del self.active[followup.followup_type_id]
            day = start.astimezone(self.tz[location_id]).date()
            for rule in self._rules(CadenceRule.Event.COMPLETED, location_id, type_id):
                self._from_event(rule, day, location_id, pk)
        # A visit saved for the first time has nobody waiting on it: nothing reopens.

    def _from_event(self, rule: CadenceRule, day: dt.date, location_id: int, source_id):
        due = rule.due_after(day)
        lapses_on = due + dt.timedelta(days=rule.lapse_after_days)
        existing = self.active.get(rule.followup_type_id)
        if existing is not None:
            if due > existing.due_date:
                existing.due_date, existing.lapses_on = due, lapses_on
                existing.rule, existing.source_appointment_id = rule, source_id
            return
        followup = Followup(
            patient_id=self.patient_id,
            followup_type=rule.followup_type,
            location_id=location_id,
            rule=rule,
            due_date=due,
            lapses_on=lapses_on,
            source=Followup.Source.RULE,
            source_appointment_id=source_id,
        )
        bookings = [(s, pk) for s, pk, t in self.booked if t in self.satisfying[rule.pk]]
        if bookings:
            followup.status = Followup.Status.SCHEDULED
            followup.scheduled_appointment_id = min(bookings)[1]
        self.active[rule.followup_type_id] = followup
        self.created.append(followup)


@transaction.atomic
def followups_backfill(
    *, patient_ids: Iterable[int] | None = None, today: dt.date | None = None
) -> list[Followup]:
    """Create, in bulk, the follow-ups that patients' recorded history implies.

    For history that arrived without the event services — the demo data, a first
    import of a scheduler's past. Each patient's appointments and discharges are
    replayed in memory, in time order, through the same steps as
    `appointment_changed` (see `_HistoryReplay`), as if each visit had been saved
    once with the status it has now, and then `followups_lapse_due(today)` is
    applied. In short: the latest trigger sets the due date; a satisfying visit
    completed after it closes the follow-up (done) and may start the next cycle; a
    satisfying visit booked ahead schedules it; past `lapses_on` it is lapsed.

    It must agree with those services: tests/followups/test_properties.py replays
    random histories both ways and compares the rows, so a change to one of them
    needs the same change here. Visits count in order of their start, a discharge
    at the end of its day. Patients who already have follow-ups are left alone, so
    a second run adds nothing. Rows and CREATE audit entries are written in bulk.
    """
    from practicecrm.audit import bulk_create_audited

    now = timezone.now()
    today = today or timezone.localdate()
    patients = Patient.objects.exclude(Exists(Followup.objects.filter(patient=OuterRef("pk"))))
    if patient_ids is not None:
        patients = patients.filter(pk__in=list(patient_ids))
    wanted = patients.values("pk")
    replay = _HistoryReplay(now=now)
    if not replay.rules:
        return []

    events: dict[int, list[tuple]] = {}
    visits = Appointment.objects.filter(patient__in=wanted).values_list(
        "patient_id", "start", "pk", "location_id", "appointment_type_id", "status"
    )
    for patient_id, start, pk, location_id, type_id, status in visits:
        events.setdefault(patient_id, []).append((start, _VISIT, pk, location_id, type_id, status))
    discharges = Discharge.objects.filter(patient__in=wanted).values_list(
        "patient_id", "discharged_on", "pk", "location_id"
    )
    for patient_id, on, pk, location_id in discharges:
        end_of_day = dt.datetime.combine(on, dt.time.max, tzinfo=replay.tz[location_id])
        events.setdefault(patient_id, []).append(
            (end_of_day, _DISCHARGE, pk, location_id, None, on)
        )

    followups: list[Followup] = []
    for patient_id, history in events.items():
        followups += replay.patient(patient_id, history)
    for followup in followups:
        # What the daily followups_lapse_due would have done by today.
        waiting = followup.status in (Followup.Status.OPEN, Followup.Status.CONTACTED)
        if waiting and followup.lapses_on <= today:
            followup.status = Followup.Status.LAPSED
            followup.closed_at = now
    return bulk_create_audited(Followup, followups)


# --- Cadence rules ------------------------------------------------------------------


def rule_overlapping(
    *,
    followup_type: FollowupType,
    event: str,
    all_locations: bool,
    locations: Iterable[Location],
    trigger_types: Iterable[AppointmentType],
    exclude_pk: int | None = None,
) -> CadenceRule | None:
    """Another active rule that would compete with this one for the same follow-up.

    Two rules overlap when they create one follow-up type from the same event where
    their scopes meet (either covers all locations, or they share one) and — for
    appointment-completed rules — a completed visit of one type triggers both.
    """
    others = CadenceRule.objects.filter(is_active=True, followup_type=followup_type, event=event)
    if exclude_pk is not None:
        others = others.exclude(pk=exclude_pk)
    if not all_locations:
        others = others.filter(Q(all_locations=True) | Q(locations__in=list(locations)))
    if event == CadenceRule.Event.COMPLETED:
        others = others.filter(trigger_types__in=list(trigger_types))
    return others.distinct().order_by("name").first()


def rule_overlap_message(
    other: CadenceRule,
    *,
    all_locations: bool,
    locations: Iterable[Location],
    trigger_types: Iterable[AppointmentType],
) -> str:
    """Say which rule is in the way, and after what and where both would fire."""
    if other.event == CadenceRule.Event.COMPLETED:
        mine = set(trigger_types)
        shared = [t.name for t in other.trigger_types.all() if t in mine]
        when = f"after a completed {' or '.join(shared)}"
    else:
        when = "after a discharge"
    if all_locations and other.all_locations:
        where = "at every location"
    else:
        theirs = set(Location.objects.all() if other.all_locations else other.locations.all())
        common = theirs if all_locations else theirs & set(locations)
        names = sorted(loc.name for loc in common)
        where = f"at {', '.join(names)}"
    return (
        f"“{other.name}” already creates {other.followup_type} follow-ups {when} {where}: "
        "two rules would create two open follow-ups of one type. Change the follow-up type, "
        f"the trigger types or the locations, or deactivate “{other.name}” first."
    )


@transaction.atomic
def rule_save(
    *,
    rule: CadenceRule,
    trigger_types: Iterable[AppointmentType],
    satisfying_types: Iterable[AppointmentType],
    locations: Iterable[Location],
    by,
) -> CadenceRule:
    """Create or change a cadence rule and its lists of types and locations.

    The form checks for overlapping rules; this checks again with the follow-up
    type's row locked, so two admins saving competing rules at the same moment
    cannot both pass. The lists are written with .set(), which auditlog records
    as changes of the rule.
    """
    FollowupType.objects.select_for_update().get(pk=rule.followup_type_id)
    if rule.event == CadenceRule.Event.DISCHARGED:
        trigger_types = []  # a discharge has no appointment type
    if rule.all_locations:
        locations = []
    trigger_types, locations = list(trigger_types), list(locations)
    if rule.is_active:
        other = rule_overlapping(
            followup_type=rule.followup_type,
            event=rule.event,
            all_locations=rule.all_locations,
            locations=locations,
            trigger_types=trigger_types,
            exclude_pk=rule.pk,
        )
        if other is not None:
            message = rule_overlap_message(
                other,
                all_locations=rule.all_locations,
                locations=locations,
                trigger_types=trigger_types,
            )
            raise ValidationError({"followup_type": message})
    rule.save()
    rule.trigger_types.set(trigger_types)
    rule.satisfying_types.set(satisfying_types)
    rule.locations.set(locations)
    return rule
