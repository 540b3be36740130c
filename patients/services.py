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
def consent_set(
    *,
    patient: Patient,
    channel: str,
    status: str | None,
    method: str,
    by,
    note: str = "",
    recorded_at: dt.datetime | None = None,
) -> ChannelConsent | None:
    """Record the patient's consent for one channel (`status=None` clears it).

    A call with the same status as today's is a no-op: re-saving an unchanged
    form must not overwrite when and by whom the consent was really recorded.
    """
    current = patient.consents.filter(channel=channel).first()
    if status is None:
        if current is not None:
            current.delete()
        return None
    if current is not None and current.status == status:
        return current
    consent = current or ChannelConsent(patient=patient, channel=channel)
    consent.status = status
    consent.method = method
    consent.recorded_by = by
    consent.recorded_at = recorded_at or timezone.now()
    consent.note = note
    consent.save()
    return consent


@transaction.atomic
def household_set(*, patient: Patient, household: Household | None, is_primary: bool) -> None:
    """Put the patient in a household (or none), optionally as its reminder recipient."""
    if patient.household_id != (household.pk if household else None):
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
