"""Reads for what staff see of the outbox and the replies (issue #4, "What staff see").

Access follows the message's location: reading needs VIEW_PATIENTS there, marking a
failure handled or a reply read needs CHANGE_PATIENTS. Another location's message
is a 404, through `message_get` / `reply_get`.
"""

import datetime as dt
from dataclasses import dataclass

import django_filters
from django import forms
from django.db.models import (
    Case,
    Exists,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Value,
    When,
)
from django.http import Http404

from locations.access import CHANGE_PATIENTS, VIEW_PATIENTS
from locations.models import Location
from patients.models import Patient
from patients.selectors import location_ids_for, patients_visible_to, visible_patient_q
from reminders.models import InboundMessage, OutboundMessage

Status = OutboundMessage.Status
PENDING = (Status.PLANNED, Status.QUEUED, Status.SENDING)
FAILED = (Status.FAILED, Status.UNDELIVERED)
# What a patient or a follow-up "got": the row left the building (or would have).
WENT_OUT = (Status.SENT, Status.DELIVERED, Status.UNDELIVERED, Status.FAILED, Status.SHADOW)
ATTENTION_DAYS = 14
TABS = {
    "queue": "Today's queue",
    "attention": "Needs attention",
    "replies": "Replies",
    "all": "All",
}


def status_note(message: OutboundMessage) -> str:
    """Why a message did not (yet) go out, in plain words; "" when nothing to explain."""
    reason = message.reason
    if message.status == Status.SUPPRESSED:
        return f"Not sent: {reason or 'no reason recorded'}"
    if message.status == Status.CANCELLED:
        return f"Cancelled: {reason or 'no longer needed'}"
    if message.status in FAILED:
        label = "Failed" if message.status == Status.FAILED else "Undelivered"
        words = reason or message.error_message or "the provider refused it"
        code = f" (error {message.error_code})" if message.error_code else ""
        return f"{label}: {words}{code}"
    if message.status == Status.PLANNED and reason:
        return f"Deferred: {reason}"
    return reason


def message_when(message: OutboundMessage) -> dt.datetime:
    """Sent time once it went, else when it is (or was) scheduled."""
    return message.sent_at or message.scheduled_for


# --- Access -------------------------------------------------------------------------


# On literal location ids, read once per request (patients.selectors.location_ids_for):
# the navigation's unread count runs on every page.


def messages_visible_to(user, perm: str = VIEW_PATIENTS) -> QuerySet[OutboundMessage]:
    return OutboundMessage.objects.filter(location_id__in=location_ids_for(user=user, perm=perm))


def replies_visible_to(user, perm: str = VIEW_PATIENTS) -> QuerySet[InboundMessage]:
    return InboundMessage.objects.filter(location_id__in=location_ids_for(user=user, perm=perm))


def message_get(*, user, pk: int, perm: str = CHANGE_PATIENTS) -> OutboundMessage:
    """An outbox row at one of the user's locations, else 404."""
    message = messages_visible_to(user, perm).filter(pk=pk).first()
    if message is None:
        raise Http404("No such message.")
    return message


def reply_get(*, user, pk: int, perm: str = CHANGE_PATIENTS) -> InboundMessage:
    """A patient's SMS to one of the user's locations, else 404."""
    reply = replies_visible_to(user, perm).filter(pk=pk).first()
    if reply is None:
        raise Http404("No such reply.")
    return reply


def unread_reply_count(*, user) -> int:
    """The navigation badge: inbox replies nobody has read yet, at the user's locations."""
    return (
        replies_visible_to(user)
        .filter(action=InboundMessage.Action.INBOX, read_at__isnull=True)
        .count()
    )


# --- The patient page ---------------------------------------------------------------

PATIENT_MESSAGES = 20
PATIENT_REPLIES = 10


def patient_messages(*, patient: Patient, user) -> dict:
    """The patient page's "Messages": outbox rows and replies, in a fixed number of queries.

    Rows about the patient, and rows the patient receives for household members the
    user may see (another location's member is not named here any more than in the
    household card).
    """
    # The visibility rule on the joined patient, with the user's location ids as
    # literals: as `patient__in=<visible patients subquery>` PostgreSQL costed the
    # subquery at half the patient table and walked the outbox location by location
    # (117 ms at 200 locations instead of 1 ms; benchmarks/pages.py at 10×).
    visible = visible_patient_q(location_ids_for(user=user), via="patient__")
    rows = list(
        OutboundMessage.objects.filter(Q(patient=patient) | (Q(recipient=patient) & visible))
        .select_related("location", "patient")
        .order_by("-scheduled_for", "-id")[: PATIENT_MESSAGES + 1]
    )
    replies = list(
        InboundMessage.objects.filter(patients=patient)
        .select_related("location")
        .order_by("-received_at", "-id")[:PATIENT_REPLIES]
    )
    return {
        "outbox": rows[:PATIENT_MESSAGES],
        "outbox_more": len(rows) > PATIENT_MESSAGES,
        "replies": replies,
        "reply_location_ids": set(location_ids_for(user=user, perm=CHANGE_PATIENTS)),
    }


# --- Recall outreach on Today rows --------------------------------------------------


@dataclass(frozen=True)
class Outreach:
    last: OutboundMessage | None  # the last step that went out or was held back
    next: OutboundMessage | None  # the next planned step
    call_list: bool  # every step is done: the phone is next


# What a Today row says of a recall message (reminder_tags.outreach, status_note,
# message_when); its location is the row's (followups.selectors.with_locations).
_OUTREACH_FIELDS = (
    "id",
    "followup_id",
    "location_id",
    "channel",
    "status",
    "reason",
    "error_message",
    "error_code",
    "scheduled_for",
    "sent_at",
)


def recall_messages_prefetch() -> Prefetch:
    """One query for the recall messages of a whole page of follow-ups, with the
    columns a row shows (not the bodies), and without their location: ~75 messages
    on a page of 25 rows carried ~75 copies of the same few locations."""
    return Prefetch(
        "messages",
        queryset=OutboundMessage.objects.filter(kind=OutboundMessage.Kind.RECALL)
        .only(*_OUTREACH_FIELDS)
        .order_by("scheduled_for", "id"),
        to_attr="recall_messages",
    )


def outreach_of(messages: list[OutboundMessage]) -> Outreach | None:
    """Summarise a follow-up's recall messages (oldest first); None if it has none."""
    if not messages:
        return None
    pending = [m for m in messages if m.status in PENDING]
    done = [m for m in messages if m.status not in PENDING and m.status != Status.CANCELLED]
    last = max(done, key=message_when) if done else None
    return Outreach(last=last, next=pending[0] if pending else None, call_list=not pending)


# --- The Messages page --------------------------------------------------------------


_DATE = forms.DateInput(attrs={"type": "date"})


class MessageFilter(django_filters.FilterSet):
    """The Messages page's filters besides location (which is remembered, like Today's)."""

    channel = django_filters.ChoiceFilter(
        choices=OutboundMessage.Channel.choices, empty_label="Any channel"
    )
    kind = django_filters.ChoiceFilter(choices=OutboundMessage.Kind.choices, empty_label="Any kind")
    status = django_filters.ChoiceFilter(choices=Status.choices, empty_label="Any status")
    since = django_filters.DateFilter(
        field_name="scheduled_for", lookup_expr="date__gte", label="From", widget=_DATE
    )
    until = django_filters.DateFilter(
        field_name="scheduled_for", lookup_expr="date__lte", label="To", widget=_DATE
    )
    patient = django_filters.NumberFilter(field_name="patient_id")

    class Meta:
        model = OutboundMessage
        fields = ["channel", "kind", "status", "since", "until", "patient"]


def _today_q(locations: list[Location], now: dt.datetime) -> Q:
    """Pending rows due before the end of today in each location's own time zone, and
    rows deferred (planned again, with the reason) past it into tomorrow: what today's
    quiet hours or caps pushed back. Recall steps deferred further out are in "All"."""
    q = Q()
    for location in locations:
        today = now.astimezone(location.tz).date()
        end, tomorrow_end = (
            dt.datetime.combine(today + dt.timedelta(days=n), dt.time.min, tzinfo=location.tz)
            for n in (1, 2)
        )
        q |= Q(location=location, status__in=PENDING, scheduled_for__lt=end)
        q |= Q(location=location, status=Status.PLANNED, scheduled_for__lt=tomorrow_end) & ~Q(
            reason=""
        )
    return q


def _attention_q(now: dt.datetime) -> Q:
    since = now - dt.timedelta(days=ATTENTION_DAYS)
    return Q(handled_at__isnull=True) & (
        Q(needs_attention=True) | Q(status__in=FAILED, scheduled_for__gte=since)
    )


def outbox_base(
    *, user, locations: list[Location], location: Location | None, data
) -> tuple[QuerySet[OutboundMessage], MessageFilter]:
    """Outbox rows at the chosen (or every) location of the user, filtered.

    A household's contact may be a patient of a location the user cannot open:
    `recipient_visible` says whether the row may show who received it and where.
    """
    qs = messages_visible_to(user).annotate(
        recipient_visible=Exists(patients_visible_to(user).filter(pk=OuterRef("recipient_id")))
    )
    if location is not None:
        qs = qs.filter(location=location)
    filterset = MessageFilter(data, queryset=qs)
    return filterset.qs, filterset


def outbox_tab(
    qs: QuerySet[OutboundMessage], *, tab: str, locations: list[Location], now: dt.datetime
) -> QuerySet[OutboundMessage]:
    """One tab's rows with what a row shows, in a fixed number of queries per page."""
    if tab == "queue":
        qs = qs.filter(_today_q(locations, now)).order_by("scheduled_for", "id")
    elif tab == "attention":
        qs = qs.filter(_attention_q(now)).order_by("-scheduled_for", "-id")
    else:
        qs = qs.order_by("-scheduled_for", "-id")
    return qs.select_related("location", "patient", "recipient")


def outbox_counts(
    qs: QuerySet[OutboundMessage], *, locations: list[Location], now: dt.datetime
) -> dict[str, int]:
    """Rows in each outbox tab under the same filters (three small queries).

    Not one aggregate with three FILTERs: that reads every message the locations
    ever sent and tests each against the queue's per-location conditions (a
    second at 20 locations). Alone, the queue and attention counts read their
    partial indexes (outbox_pending_idx, outbox_attention_idx) and "All" the
    location index.
    """
    return {
        "queue": qs.filter(_today_q(locations, now)).count(),
        "attention": qs.filter(_attention_q(now)).count(),
        "all": qs.count(),
    }


def replies_base(*, user, location: Location | None) -> QuerySet[InboundMessage]:
    qs = replies_visible_to(user).filter(action=InboundMessage.Action.INBOX)
    if location is not None:
        qs = qs.filter(location=location)
    return qs


def reply_list(*, user, qs: QuerySet[InboundMessage]) -> QuerySet[InboundMessage]:
    """The inbox, unread first, with the patients the user may see (fixed queries)."""
    return (
        qs.select_related("location")
        .prefetch_related(
            Prefetch(
                "patients",
                queryset=patients_visible_to(user).order_by("last_name", "first_name"),
                to_attr="visible_patients",
            )
        )
        .annotate(
            unread_first=Case(
                When(read_at__isnull=True, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("unread_first", "-received_at", "-id")
    )
