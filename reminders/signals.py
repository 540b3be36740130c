"""Replanning hooks: whatever path changes a visit, a follow-up or a patient.

Signals rather than calls in each service, because appointments and follow-ups
change from many places (staff forms, imports, SMS confirmations, beat tasks),
and a reminder for a cancelled visit must never survive any of them. Bulk writes
(demo seeding, backfill) bypass signals and plan explicitly (planning.plan_all).
"""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from followups.models import Followup
from patients.models import Appointment, ChannelConsent, Household, Patient
from reminders import planning


@receiver(post_save, sender=Appointment, dispatch_uid="reminders_appointment")
def appointment_saved(sender, instance: Appointment, raw=False, **kwargs) -> None:
    if not raw:
        planning.appointment_replan(instance)


@receiver(post_save, sender=Followup, dispatch_uid="reminders_followup")
def followup_saved(sender, instance: Followup, raw=False, **kwargs) -> None:
    if not raw:
        planning.followup_replan(instance)


@receiver(post_save, sender=Patient, dispatch_uid="reminders_patient")
def patient_saved(sender, instance: Patient, raw=False, created=False, **kwargs) -> None:
    if not raw and not created:
        planning.patient_replan(instance)


@receiver(post_save, sender=ChannelConsent, dispatch_uid="reminders_consent_saved")
@receiver(post_delete, sender=ChannelConsent, dispatch_uid="reminders_consent_deleted")
def consent_changed(sender, instance: ChannelConsent, raw=False, **kwargs) -> None:
    if not raw:
        patient = Patient.objects.filter(pk=instance.patient_id).first()
        if patient is not None:
            planning.patient_replan(patient)


@receiver(post_save, sender=Household, dispatch_uid="reminders_household")
def household_saved(sender, instance: Household, raw=False, **kwargs) -> None:
    member = Patient.objects.filter(household=instance).first()
    if not raw and member is not None:
        planning.patient_replan(member)  # replans the whole household
