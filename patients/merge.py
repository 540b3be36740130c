"""Merging two records of one person into one (issue #5).

Imports never merge on their own: a suspected duplicate is listed, and a person
chooses which record survives. Everything the duplicate holds then moves to the
survivor, each move through an audited save or the audited bulk helpers, and both
records get one entry that says what the merge did. The duplicate is kept, marked
`merged_into`, as history: it leaves every list, search and worklist, and its old
address leads to the survivor.
"""

from dataclasses import dataclass

from auditlog.models import LogEntry
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils.formats import date_format

from followups.models import ACTIVE_STATUSES, Discharge, Followup
from followups.services import followup_dismiss
from locations.access import CHANGE_PATIENTS
from patients.models import Appointment, ChannelConsent, ExternalIdentifier, Patient
from patients.selectors import patient_list
from practicecrm.audit import update_audited
from reminders import planning
from reminders.models import InboundMessage, OutboundMessage

# Contact fields the survivor takes from the duplicate when its own are empty, with
# the words the merge entry lists them by. The postal address is one unit
# (ADDRESS_FIELDS): the street of one record with the city of the other would make
# an address nobody lives at.
CONTACT_FIELDS = {
    "preferred_name": "preferred name",
    "mobile_phone": "mobile phone",
    "home_phone": "home phone",
    "email": "email",
}
ADDRESS_FIELDS = ("address_line1", "address_line2", "city", "region", "postal_code")


class MergeRefused(Exception):
    """The two records cannot be merged (the same record, or one already merged)."""


# --- reads: picking the other record and comparing the two ---------------------------


def merge_candidates(*, user, patient: Patient, query: str, limit: int = 20) -> list[Patient]:
    """Records the user may merge with `patient`: the same search as the patient list,
    narrowed to patients the user may change (a merge rewrites both records)."""
    if not query.strip():
        return []
    qs = patient_list(user=user, query=query, perm=CHANGE_PATIENTS).exclude(pk=patient.pk)
    return list(qs[:limit])


@dataclass(frozen=True)
class MergeSide:
    patient: Patient
    external_ids: list[ExternalIdentifier]
    appointments: int
    followups: int
    active_followups: int
    messages: int


def merge_comparison(*, patients: list[Patient]) -> list[MergeSide]:
    """What the side-by-side page shows of each record, in a fixed number of queries."""
    counted = {
        p.pk: p
        for p in Patient.objects.filter(pk__in=[p.pk for p in patients])
        .select_related("home_location")
        .prefetch_related("external_ids")
        .annotate(
            n_appointments=Count("appointments", distinct=True),
            n_followups=Count("followups", distinct=True),
            n_active=Count(
                "followups", filter=Q(followups__status__in=ACTIVE_STATUSES), distinct=True
            ),
            n_messages=Count("messages", distinct=True),
        )
    }
    return [
        MergeSide(
            patient=p,
            external_ids=list(p.external_ids.all()),
            appointments=p.n_appointments,  # type: ignore[attr-defined]
            followups=p.n_followups,  # type: ignore[attr-defined]
            active_followups=p.n_active,  # type: ignore[attr-defined]
            messages=p.n_messages,  # type: ignore[attr-defined]
        )
        for p in (counted[p.pk] for p in patients)
    ]


# --- the merge ---------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _lock_pair(survivor: Patient, duplicate: Patient) -> tuple[Patient, Patient]:
    """Lock both rows, lower id first, so two merges of the same pair cannot deadlock,
    and read them fresh: the page the user confirmed on may be minutes old."""
    if survivor.pk == duplicate.pk:
        raise MergeRefused("Choose two different records to merge.")
    rows = {
        p.pk: p
        for p in Patient.objects.select_for_update()
        .filter(pk__in=[survivor.pk, duplicate.pk])
        .order_by("pk")
    }
    if len(rows) != 2:
        raise MergeRefused("One of the records no longer exists.")
    survivor, duplicate = rows[survivor.pk], rows[duplicate.pk]
    for p in (survivor, duplicate):
        if p.merged_into_id is not None:
            raise MergeRefused(f"{p.display_name} was already merged into another record.")
    return survivor, duplicate


def _merge_followups(survivor: Patient, duplicate: Patient, *, by) -> list[str]:
    """Close the duplicate's active follow-ups that the survivor already has.

    One active follow-up per patient and type is a database constraint; the
    survivor's is the one staff have been working, so it stays. Contact attempts
    hang off their follow-up and move with it.
    """
    kept = set(
        survivor.followups.filter(status__in=ACTIVE_STATUSES).values_list(
            "followup_type_id", flat=True
        )
    )
    closed = []
    reason = f"Merged into {survivor.display_name} (#{survivor.pk})"[:200]
    for followup in duplicate.followups.filter(
        status__in=ACTIVE_STATUSES, followup_type_id__in=kept
    ).select_related("followup_type", "patient"):
        followup_dismiss(followup=followup, reason=reason, by=by)
        closed.append(str(followup.followup_type))
    return closed


def _merge_consents(survivor: Patient, duplicate: Patient) -> list[str]:
    """Per channel, the consent recorded most recently is the patient's current word."""
    notes = []
    mine = {c.channel: c for c in survivor.consents.all()}
    for theirs in duplicate.consents.all():
        ours = mine.get(theirs.channel)
        label = theirs.get_channel_display()
        if ours is None:
            theirs.patient = survivor
            theirs.save()
            notes.append(f"{label}: taken from the other record ({_consent_text(theirs)})")
        elif theirs.recorded_at > ours.recorded_at:
            ours.delete()
            theirs.patient = survivor
            theirs.save()
            notes.append(
                f"{label}: the other record's, more recent ({_consent_text(theirs)}), "
                f"replaced this record's ({_consent_text(ours)})"
            )
        else:
            theirs.delete()
            notes.append(
                f"{label}: kept this record's ({_consent_text(ours)}); the other record's "
                f"older one ({_consent_text(theirs)}) was removed"
            )
    return notes


def _consent_text(consent: ChannelConsent) -> str:
    return f"{consent.get_status_display().lower()}, {date_format(consent.recorded_at.date())}"


def _fill_contact(survivor: Patient, duplicate: Patient) -> list[str]:
    """Fill the survivor's empty contact fields; a filled one is never overwritten."""
    filled = []
    for name, label in CONTACT_FIELDS.items():
        if not getattr(survivor, name) and getattr(duplicate, name):
            setattr(survivor, name, getattr(duplicate, name))
            filled.append(label)
    if "mobile_phone" in filled:
        # What Twilio said about that number goes with the number.
        survivor.sms_unusable_reason = duplicate.sms_unusable_reason
    if not any(getattr(survivor, f) for f in ADDRESS_FIELDS) and any(
        getattr(duplicate, f) for f in ADDRESS_FIELDS
    ):
        for name in ADDRESS_FIELDS:
            setattr(survivor, name, getattr(duplicate, name))
        filled.append("address")
    return filled


def _keep_refusals(survivor: Patient, duplicate: Patient) -> list[str]:
    """A "do not contact" or a STOP on either record holds for the person.

    Unlike contact fields these are not "fill if empty" but "refusal wins": texting
    someone who replied STOP under their other record is the harm a merge must
    not cause. Staff can lift either afterwards on the survivor, as usual.
    """
    notes = []
    if duplicate.do_not_contact and not survivor.do_not_contact:
        survivor.do_not_contact = True
        survivor.do_not_contact_reason = duplicate.do_not_contact_reason
        notes.append("do not contact (from the other record)")
    if duplicate.sms_opted_out_at and not survivor.sms_opted_out_at:
        survivor.sms_opted_out_at = duplicate.sms_opted_out_at
        notes.append("SMS opt-out (STOP) from the other record")
    return notes


def _merge_household(survivor: Patient, duplicate: Patient) -> str:
    """The survivor keeps its household, or joins the duplicate's if it has none."""
    household = duplicate.household
    if household is None:
        return ""
    note = ""
    if survivor.household_id is None:
        survivor.household = household
        note = f"joined {household.name} (from the other record)"
    if household.primary_contact_id == duplicate.pk:
        # The family's reminders went to the duplicate: they now go to the survivor
        # if the survivor is in that household, else to each member themselves.
        stays = survivor.household_id == household.pk
        household.primary_contact = survivor if stays else None
        household.save(update_fields=["primary_contact"])
        if not stays:
            note = f"{household.name} no longer has a reminder contact (was the other record)"
    duplicate.household = None
    return note


def _log_merge(patient: Patient, changes: dict[str, str], *, by) -> None:
    """One entry on the patient's timeline that says what the merge did.

    Values are one-item lists: the timeline shows two items as before → after.
    """
    actor = by if getattr(by, "is_authenticated", False) else None
    LogEntry.objects.log_create(
        patient,
        force_log=True,
        action=LogEntry.Action.UPDATE,
        changes={key: [value] for key, value in changes.items() if value},
        actor=actor,
        actor_email=getattr(actor, "email", None),
    )


@transaction.atomic
def patient_merge(*, survivor: Patient, duplicate: Patient, by) -> Patient:
    """Move everything of `duplicate` onto `survivor` and retire `duplicate`.

    Raises MergeRefused for the same record twice or a record already merged.
    External ids all move: they are unique per (system, value), so two MRNs of
    one system can both stay on the survivor, and a re-import under either id
    then updates the survivor.
    """
    survivor, duplicate = _lock_pair(survivor, duplicate)
    closed = _merge_followups(survivor, duplicate, by=by)
    moved = {
        "appointment": update_audited(
            Appointment.objects.filter(patient=duplicate), patient=survivor
        ),
        "follow-up": update_audited(Followup.objects.filter(patient=duplicate), patient=survivor),
        "discharge": update_audited(Discharge.objects.filter(patient=duplicate), patient=survivor),
        "external id": update_audited(
            ExternalIdentifier.objects.filter(patient=duplicate), patient=survivor
        ),
        # The outbox is not in the audit trail by design (each row is its own record
        # of what was sent), so a plain update; the count is in the merge entry.
        "message": OutboundMessage.objects.filter(patient=duplicate).update(patient=survivor),
    }
    OutboundMessage.objects.filter(recipient=duplicate).update(recipient=survivor)
    moved["reply"] = _move_replies(survivor, duplicate)
    # Records merged into the duplicate earlier now lead straight to the survivor.
    update_audited(Patient.objects.filter(merged_into=duplicate), merged_into=survivor)
    consents = _merge_consents(survivor, duplicate)

    shared = {duplicate.home_location_id, *duplicate.shared_with.values_list("pk", flat=True)}
    shared -= {survivor.home_location_id, *survivor.shared_with.values_list("pk", flat=True)}
    if shared:
        # Staff of the duplicate's locations keep seeing the person they booked.
        survivor.shared_with.add(*shared)

    household = _merge_household(survivor, duplicate)
    filled = _fill_contact(survivor, duplicate)
    refusals = _keep_refusals(survivor, duplicate)
    survivor.save()

    duplicate.merged_into = survivor
    if duplicate.status == Patient.Status.ACTIVE:
        duplicate.status = Patient.Status.INACTIVE
    duplicate.save()

    summary = ", ".join(_plural(n, word) for word, n in moved.items() if n) or "nothing"
    common = {
        "moved": summary,
        "follow-ups closed as duplicates": ", ".join(closed),
        "consent": "; ".join(consents),
        "household": household,
    }
    _log_merge(
        survivor,
        {
            "merged in": f"{duplicate.display_name} (record #{duplicate.pk}, born "
            f"{date_format(duplicate.date_of_birth)})",
            **common,
            "filled from the other record": ", ".join(filled),
            "kept": "; ".join(refusals),
        },
        by=by,
    )
    _log_merge(
        duplicate,
        {"merged into": f"{survivor.display_name} (record #{survivor.pk})", **common},
        by=by,
    )
    planning.patient_replan(survivor)
    return survivor


def _move_replies(survivor: Patient, duplicate: Patient) -> int:
    """Inbound SMS name the patients they may be from (M2M): swap the duplicate out."""
    through: QuerySet = InboundMessage.patients.through.objects.filter(patient=duplicate)
    ids = list(through.values_list("inboundmessage_id", flat=True))
    survivor.inbound_messages.add(*ids)
    through.delete()
    return len(ids)
