"""Every write to patients, their preferences and appointments.

Each service is atomic and leaves the audit trail to django-auditlog's signals
(single-row saves) — the request's actor is attached by AuditlogMiddleware.
"""

import datetime as dt

from django.db import transaction
from django.utils import timezone

from patients.models import Appointment, ChannelConsent, Household, Patient


@transaction.atomic
def patient_save(*, patient: Patient, shared_with=None, by) -> Patient:
    """Create or update a patient from a validated form instance."""
    patient.full_clean(exclude=["search_name", "search_phones"])
    patient.save()
    if shared_with is not None:
        # set() diffs and only sends add/remove for real changes, so the m2m audit
        # entries list what actually changed.
        patient.shared_with.set(shared_with)
    return patient


@transaction.atomic
def patient_preferences_set(
    *,
    patient: Patient,
    preferred_channel: str,
    language: str,
    do_not_contact: bool,
    do_not_contact_reason: str,
    consents: dict[str, str | None],
    consent_method: str,
    by,
    shared_with=None,
    consent_scopes: dict[str, dict[str, bool]] | None = None,
) -> Patient:
    """Save communication preferences and per-channel consent in one step.

    For a new patient this is also the first save, so creating a patient writes one
    CREATE entry with the preferences in it, not a create followed by an update.
    `consent_scopes` narrows a channel's consent per kind of message, e.g.
    {"sms": {"appointment_reminders": True, "recall_outreach": False}}; None keeps it.
    """
    patient.preferred_channel = preferred_channel
    patient.language = language
    patient.do_not_contact = do_not_contact
    patient.do_not_contact_reason = do_not_contact_reason.strip() if do_not_contact else ""
    patient_save(patient=patient, shared_with=shared_with, by=by)
    scopes = consent_scopes or {}
    for channel, status in consents.items():
        scope = scopes.get(channel, {})
        consent_set(
            patient=patient,
            channel=channel,
            status=status,
            method=consent_method,
            by=by,
            appointment_reminders=scope.get("appointment_reminders"),
            recall_outreach=scope.get("recall_outreach"),
        )
    return patient


@transaction.atomic
def consent_set(
    *,
    patient: Patient,
    channel: str,
    status: str | None,
    method: str,
    by,
    note: str = "",
    recorded_at: dt.datetime | None = None,
    appointment_reminders: bool | None = None,
    recall_outreach: bool | None = None,
) -> ChannelConsent | None:
    """Record the patient's consent for one channel (`status=None` clears it).

    `appointment_reminders` / `recall_outreach` narrow a granted consent to some
    kinds of message; None leaves them as they are (a new consent covers both).
    A call that changes nothing is a no-op: re-saving an unchanged form must not
    overwrite when and by whom the consent was really recorded.
    """
    current = patient.consents.filter(channel=channel).first()
    if status is None:
        if current is not None:
            current.delete()
        return None
    scope = {
        name: value
        for name, value in (
            ("appointment_reminders", appointment_reminders),
            ("recall_outreach", recall_outreach),
        )
        if value is not None
    }
    if (
        current is not None
        and current.status == status
        and all(getattr(current, name) == value for name, value in scope.items())
    ):
        return current
    consent = current or ChannelConsent(patient=patient, channel=channel)
    for name, value in scope.items():
        setattr(consent, name, value)
    consent.status = status
    consent.method = method
    consent.recorded_by = by
    consent.recorded_at = recorded_at or timezone.now()
    consent.note = note
    consent.save()
    return consent


def _leave_household(patient: Patient) -> None:
    """Take the patient out of their household; it no longer sends them its reminders."""
    old = patient.household
    if old is not None and old.primary_contact_id == patient.pk:
        old.primary_contact = None
        old.save(update_fields=["primary_contact"])


@transaction.atomic
def household_set(*, patient: Patient, household: Household | None, is_primary: bool) -> None:
    """Put the patient in a household (or none), optionally as its reminder recipient."""
    if patient.household_id != (household.pk if household else None):
        _leave_household(patient)
        patient.household = household
        patient.save(update_fields=["household", "updated_at"])
    if household is None:
        return
    if is_primary and household.primary_contact_id != patient.pk:
        household.primary_contact = patient
        household.save(update_fields=["primary_contact"])
    elif not is_primary and household.primary_contact_id == patient.pk:
        household.primary_contact = None
        household.save(update_fields=["primary_contact"])


@transaction.atomic
def household_create(*, patient: Patient) -> Household:
    """Start a household around this patient, who becomes its reminder recipient."""
    _leave_household(patient)
    household = Household.objects.create(
        name=f"{patient.last_name} household", primary_contact=patient
    )
    patient.household = household
    patient.save(update_fields=["household", "updated_at"])
    return household


@transaction.atomic
def appointment_save(*, appointment: Appointment, by) -> Appointment:
    """Create or update an appointment entered by staff, and follow its follow-ups.

    (followups depends on patients, so its service is imported here, at call time.)
    """
    from followups.services import appointment_changed

    previous_status = (
        Appointment.objects.filter(pk=appointment.pk).values_list("status", flat=True).first()
        if appointment.pk
        else None
    )
    if not appointment.pk:
        appointment.source = Appointment.Source.MANUAL
    appointment.full_clean()
    appointment.save()
    appointment_changed(appointment=appointment, previous_status=previous_status)
    return appointment
