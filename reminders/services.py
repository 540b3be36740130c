"""Claiming and sending outbox rows, exactly once per idempotency key.

planned ──dispatcher (SKIP LOCKED)──▶ queued ──send task (conditional UPDATE)──▶ sending
  ▲                                                                                  │
  └──── retryable error, backoff ◀────────────────────────────────────────────────────┤
                                         sent / failed / shadow ◀─────────────────────┘

Each arrow is one UPDATE that names the status it expects, so of two workers (or
one task delivered twice) exactly one moves the row and only that one sends.
A row left in "sending" by a worker killed mid-send is never resent blindly: the
provider may have accepted it (see reminders.reconcile).
"""

import datetime as dt
import logging
import os
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from django.conf import settings
from django.core import signing
from django.db import connection, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from locations.models import Location
from patients.models import Appointment, Patient
from patients.services import appointment_save, patient_save
from reminders.models import InboundMessage, OutboundMessage
from reminders.senders import SendError, SendResult, send_email, sms_sender

logger = logging.getLogger(__name__)

Status = OutboundMessage.Status
MAX_ATTEMPTS = 5


def backoff(attempts: int) -> dt.timedelta:
    """Exponential backoff with full jitter: up to 1, 2, 4, 8… minutes, capped at an hour."""
    ceiling = min(60 * 2 ** max(attempts - 1, 0), 3600)
    return dt.timedelta(seconds=random.uniform(ceiling / 2, ceiling))


def dispatch_due(
    *, now: dt.datetime | None = None, limit: int | None = None, claim_size: int = 1000
) -> list[int]:
    """Claim every due row (planned → queued), `claim_size` at a time; queue their sends.

    `SKIP LOCKED` lets two dispatchers run at once: each claims rows the other has
    not locked. Each claim commits on its own and only then queues its sends, one
    task per REMINDERS_SEND_BATCH rows, so a worker never looks for a row that is
    not yet "queued" — and 20,000 rows due at once go out from this one run, with
    no more than `claim_size` of them locked at a time. `limit` caps one run's rows
    (None: everything due).
    """
    from reminders.tasks import send_messages

    now = now or timezone.now()
    batch = max(settings.REMINDERS_SEND_BATCH, 1)
    claimed: list[int] = []
    # One send per recipient, kind and channel at a time: the family's other rows
    # wait for the next run, by which time that send has folded them in (household
    # grouping) or the cap decides about them. So a send task never holds two
    # messages a household merge would have folded together.
    groups: set[tuple] = set()
    after: tuple[dt.datetime, int] | None = None
    while limit is None or len(claimed) < limit:
        size = claim_size if limit is None else min(claim_size, limit - len(claimed))
        with transaction.atomic():
            due = OutboundMessage.objects.select_for_update(skip_locked=True).filter(
                status=Status.PLANNED, scheduled_for__lte=now
            )
            if after is not None:
                # Past the rows this run has seen: the ones it held back stay planned.
                due = due.filter(
                    Q(scheduled_for__gt=after[0]) | Q(scheduled_for=after[0], pk__gt=after[1])
                )
            rows = list(
                due.order_by("scheduled_for", "id").values_list(
                    "pk", "scheduled_for", "recipient_id", "kind", "channel"
                )[:size]
            )
            if not rows:
                break
            after = (rows[-1][1], rows[-1][0])
            ids = []
            for pk, _, recipient_id, kind, channel in rows:
                group = (recipient_id, kind, channel)
                if recipient_id is None or kind in TRANSACTIONAL or group not in groups:
                    groups.add(group)
                    ids.append(pk)
            OutboundMessage.objects.filter(pk__in=ids, status=Status.PLANNED).update(
                status=Status.QUEUED, updated_at=now
            )
            for start in range(0, len(ids), batch):
                transaction.on_commit(partial(send_messages.delay, ids[start : start + batch]))
        claimed += ids
        if len(rows) < size:
            break
    return claimed


TRANSACTIONAL = {
    OutboundMessage.Kind.CONFIRMATION_REPLY,
    OutboundMessage.Kind.HELP_REPLY,
    OutboundMessage.Kind.OPT_OUT_CONFIRMATION,
}
# What a patient "gets" for the frequency cap: outreach that went (or is going) out.
COUNTED = [Status.SENDING, Status.SENT, Status.DELIVERED, Status.SHADOW]
# Twilio error codes and what they mean for the number and the message.
OPTED_OUT_CODES = {"21610"}
UNUSABLE_CODES = {
    "21211": "invalid number",
    "21614": "not a mobile number",
    "30006": "landline or unreachable carrier",
}
UNREACHABLE_CODES = {"30003", "30005"}  # handset off / unknown: a few more tries
FILTERED_CODES = {"30007"}  # carrier filtered it as spam: a person must look
MAX_UNREACHABLE_RETRIES = 2


def message_send(*, message_id: int, now: dt.datetime | None = None) -> str:
    """Send one queued row; returns its new status (or "skipped" if not ours to send)."""
    return messages_send(message_ids=[message_id], now=now)[message_id]


def messages_send(*, message_ids: Sequence[int], now: dt.datetime | None = None) -> dict[int, str]:
    """Send queued rows; returns each one's new status ("skipped": not ours to send).

    The claim (queued → sending, one conditional UPDATE for them all) commits
    first. Then, in one transaction with the recipients' rows locked, so two
    workers cannot both pass the frequency cap, every row is checked once more —
    consent, opt-out, quiet hours, cap, household — and its words rendered as of
    now. Only then, outside any transaction, do they go to the provider, a few at
    a time over kept-alive connections; what it took is recorded in one UPDATE
    fenced by attempt. One commit per step, not three per message: on PostgreSQL a
    commit waits for the disk, and that wait was most of a message's cost.
    """
    now = now or timezone.now()
    results: dict[int, str] = dict.fromkeys(message_ids, "skipped")
    claimed = _claim(message_ids, now)
    if not claimed:
        # Another delivery of this task, or rows cancelled meanwhile: nothing to do.
        return results
    try:
        outgoing = _check(claimed, now, results)
    except Exception:
        if len(claimed) == 1:
            raise
        # One row's checks failed: the others still go, each checked on its own. A
        # row whose checks fail stays "sending" — as a crash would leave it — and is
        # settled by reconciliation.
        logger.exception("Checking outbox rows %s together failed; one at a time", list(claimed))
        outgoing = []
        for pk, recipient_id in claimed.items():
            try:
                outgoing += _check({pk: recipient_id}, now, results)
            except Exception:
                logger.exception("Outbox row %s could not be checked; left sending", pk)
                results[pk] = Status.SENDING
    shadow = [m for m in outgoing if m.location.shadow_mode]
    _finish_sent([(m, "") for m in shadow], status=Status.SHADOW, now=now)
    results.update((m.pk, Status.SHADOW) for m in shadow)
    sent, unexpected = [], None
    for message, outcome in _deliver([m for m in outgoing if not m.location.shadow_mode]):
        if isinstance(outcome, SendResult):
            sent.append((message, outcome.provider_id))
            results[message.pk] = Status.SENT
        elif isinstance(outcome, SendError):
            results[message.pk] = _failed(message, outcome)
        else:
            # A bug, not the provider's answer: the row stays "sending" (reconciled
            # later) and the task fails loudly, once the others are recorded.
            unexpected = unexpected or outcome
    _finish_sent(sent, status=Status.SENT, now=now)
    if unexpected is not None:
        raise unexpected
    return results


def _claim(message_ids: Sequence[int], now: dt.datetime) -> dict[int, int | None]:
    """queued → sending (attempt + 1) for those still queued; {id: recipient id}.

    One UPDATE … RETURNING: of two workers (or one task delivered twice) exactly one
    moves each row, and only that one sends it.
    """
    if not message_ids:
        return {}
    table = connection.ops.quote_name(OutboundMessage._meta.db_table)
    marks = ", ".join(["%s"] * len(message_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = %s, attempts = attempts + 1, updated_at = %s "
            f"WHERE status = %s AND id IN ({marks}) RETURNING id, recipient_id",
            [
                Status.SENDING,
                connection.ops.adapt_datetimefield_value(now),
                Status.QUEUED,
                *message_ids,
            ],
        )
        return dict(cursor.fetchall())


def _check(
    claimed: dict[int, int | None], now: dt.datetime, results: dict[int, str]
) -> list[OutboundMessage]:
    """Check claimed rows again and write their final words; returns those to send.

    Rows that may not go now leave "sending" here (suppressed, deferred…), with
    their status in `results`.
    """
    outgoing = []
    with transaction.atomic():
        # Serialises the cap check of two workers sending to the same person; in id
        # order, so that two batches never wait for each other in a circle. The rows
        # read under the lock are the ones checked: consent, opt-out, status.
        people = {
            p.pk: p
            for p in Patient.objects.select_for_update()
            .filter(pk__in=sorted({r for r in claimed.values() if r is not None}))
            .order_by("pk")
            .prefetch_related("consents")
        }
        messages = list(
            OutboundMessage.objects.filter(pk__in=claimed)
            .select_related("location", "appointment", "followup")
            .order_by("pk")
        )
        others = {m.patient_id for m in messages} - people.keys()
        if others:  # patients whose messages go to someone else (their household's contact)
            people.update(Patient.objects.prefetch_related("consents").in_bulk(others))
        for message in messages:
            message.patient = people[message.patient_id]
            if message.recipient_id is not None:
                message.recipient = people[message.recipient_id]
        checked = [m for m in messages if m.kind not in TRANSACTIONAL]
        history = _cap_history(checked, now)
        for message in messages:
            if message.kind in TRANSACTIONAL:
                outgoing.append(message)
                continue
            sent = history[(message.recipient or message.patient).pk]
            verdict = _verdict(message, now, history=sent)
            if verdict is not None:
                status, fields = verdict
                results[message.pk] = _finish(message, status=status, **fields)
                continue
            sent.append(None)  # going out now: it counts for the next one to this person
            outgoing.append(message)
        siblings = _household_siblings([m for m in outgoing if m.kind not in TRANSACTIONAL], now)
        templates: dict[tuple, tuple] = {}
        reworded = [
            m
            for m in outgoing
            if m.kind not in TRANSACTIONAL
            and _final_text(m, now, siblings.get(m.pk, []), templates)
        ]
        _update_rows("subject = %s, body = %s", "", [(m.subject, m.body, m.pk) for m in reworded])
    return outgoing


_pools: dict[int, ThreadPoolExecutor] = {}


def _deliver(
    messages: list[OutboundMessage],
) -> list[tuple[OutboundMessage, SendResult | Exception]]:
    """Hand messages to the provider, REMINDERS_SEND_CONCURRENCY at a time.

    Each pair holds what the provider answered, or the exception it raised.
    Sending is waiting on the network; threads overlap those waits while the
    provider's rate stays the only limit.
    """
    calls = [_send_call(m) for m in messages]
    if len(calls) < 2:
        return [(m, _attempt(call)) for m, call in zip(messages, calls, strict=True)]
    # One pool per process: a prefork child must not inherit its parent's threads.
    pool = _pools.get(os.getpid())
    if pool is None:
        pool = _pools[os.getpid()] = ThreadPoolExecutor(
            max_workers=settings.REMINDERS_SEND_CONCURRENCY, thread_name_prefix="outbox-send"
        )
    return list(zip(messages, pool.map(_attempt, calls), strict=True))


def _attempt(call: Callable[[], SendResult]) -> SendResult | Exception:
    try:
        return call()
    except Exception as exc:  # SendError: the provider's answer; anything else: a bug
        return exc


def _send_call(message: OutboundMessage) -> Callable[[], SendResult]:
    """The provider call for one message, built here: the threads touch no database."""
    if message.channel == OutboundMessage.Channel.SMS:
        return partial(
            sms_sender().send,
            to=message.to,
            body=message.body,
            sender=message.sender,
            status_callback=_status_callback_url(),
        )
    unsubscribe = unsubscribe_url(message)
    return partial(
        send_email,
        to=message.to,
        subject=message.subject,
        text=message.body + (f"\n\nUnsubscribe: {unsubscribe}" if unsubscribe else ""),
        html=message.html_body or _email_html(message, unsubscribe),
        from_email=message.sender,
        unsubscribe_url=unsubscribe,
    )


def _finish_sent(sent: list[tuple[OutboundMessage, str]], *, status: str, now: dt.datetime) -> None:
    """Record rows the provider took (or shadow mode recorded), all in one go.

    Like `_finish`, each row leaves "sending" only if it is still the attempt that
    claimed it.
    """
    updated = connection.ops.adapt_datetimefield_value(timezone.now())
    at = connection.ops.adapt_datetimefield_value(now)
    if connection.vendor == "postgresql" and len(sent) > 1:
        # One statement for the batch: each row's sid and attempt from a VALUES list.
        table = connection.ops.quote_name(OutboundMessage._meta.db_table)
        values = ", ".join(["(%s::bigint, %s::integer, %s)"] * len(sent))
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS m SET status = %s, sent_at = %s, updated_at = %s, "
                f"provider_id = v.provider_id FROM (VALUES {values}) AS v(id, attempts, "
                "provider_id) WHERE m.id = v.id AND m.status = %s AND m.attempts = v.attempts",
                [
                    str(status),
                    at,
                    updated,
                    *(value for m, pid in sent for value in (m.pk, m.attempts, pid)),
                    str(Status.SENDING),
                ],
            )
        return
    _update_rows(
        "status = %s, provider_id = %s, sent_at = %s, updated_at = %s",
        "status = %s AND attempts = %s",
        [(str(status), pid, at, updated, m.pk, str(Status.SENDING), m.attempts) for m, pid in sent],
    )


def _update_rows(assignments: str, condition: str, rows: list[tuple]) -> None:
    """UPDATE … SET `assignments` WHERE id = %s AND `condition`, once per row of
    parameters, sent together (psycopg pipelines executemany).

    For a batch of rows each getting its own values: one UPDATE … CASE built by
    the ORM costs more to compile than these cost to run.
    """
    if not rows:
        return
    table = connection.ops.quote_name(OutboundMessage._meta.db_table)
    where = f"id = %s AND {condition}" if condition else "id = %s"
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {table} SET {assignments} WHERE {where}", rows)


def _status_callback_url() -> str:
    base = settings.TWILIO_WEBHOOK_BASE_URL.rstrip("/")
    return f"{base}{reverse('reminders:twilio_status')}" if base else ""


def unsubscribe_url(message: OutboundMessage) -> str:
    """A signed one-click link that withdraws the recipient's email consent."""
    base = settings.SITE_URL.rstrip("/")
    if not base or message.kind in TRANSACTIONAL or not message.recipient_id:
        return ""
    token = signing.dumps({"p": message.recipient_id}, salt=UNSUBSCRIBE_SALT)
    return f"{base}{reverse('reminders:unsubscribe', args=[token])}"


UNSUBSCRIBE_SALT = "reminders.unsubscribe"


def _email_html(message: OutboundMessage, unsubscribe: str) -> str:
    """The HTML part: the same words (escaped), a plain card, the unsubscribe link."""
    return render_to_string(
        "reminders/email.html",
        {
            "subject": message.subject,
            "body": message.body,
            "language": message.recipient.language if message.recipient else "en",
            "location_name": message.location.name,
            "unsubscribe_url": unsubscribe,
        },
    )


def _verdict(
    message: OutboundMessage, now: dt.datetime, *, history: list[dt.datetime | None]
) -> tuple[str, dict] | None:
    """None if the message may go now; else the status and fields to leave "sending" with.

    `history` is when the recipient's other counted messages went out (see `_cap_history`).
    """
    from reminders import planning

    Kind = OutboundMessage.Kind
    location = message.location
    if message.kind == Kind.APPOINTMENT_REMINDER:
        appointment = message.appointment  # read after the recipient's lock, with the row
        if appointment is None or appointment.status not in planning.BOOKED:
            label = appointment.get_status_display().lower() if appointment else "deleted"
            return Status.CANCELLED, {"reason": f"Appointment {label}"}
        if appointment.start <= now:
            return Status.CANCELLED, {"reason": "The appointment time has passed"}
    if message.kind == Kind.RECALL:
        followup = message.followup
        if followup is None:
            return Status.CANCELLED, {"reason": "Follow-up deleted"}
        if followup.status == followup.Status.SCHEDULED:
            return Status.SUPPRESSED, {"reason": "Future appointment booked"}
        if followup.status not in (followup.Status.OPEN, followup.Status.CONTACTED):
            return Status.CANCELLED, {
                "reason": f"Follow-up {followup.get_status_display().lower()}"
            }
    patient = message.patient
    recipient = message.recipient or patient
    blocker = planning.person_blocker(
        patient=patient, recipient=recipient, location=location, kind=message.kind
    ) or planning.channel_blocker(
        recipient=recipient, location=location, kind=message.kind, channel=message.channel
    )
    if blocker:
        return Status.SUPPRESSED, {"reason": blocker}
    if planning.address(recipient, message.channel) != message.to:
        message.to = planning.address(recipient, message.channel)
        OutboundMessage.objects.filter(pk=message.pk).update(to=message.to)
    if not location.may_send_at(now):
        later = location.next_send_time(now)
        if message.appointment is not None and later >= message.appointment.start:
            return Status.SUPPRESSED, {
                "reason": "Quiet hours: no time left to send before the visit"
            }
        return Status.PLANNED, {
            "scheduled_for": later,
            "reason": planning.deferral_note(location, later),
        }
    over = _over_cap(history, location, now)
    if over:
        if message.kind == Kind.RECALL:
            local = now.astimezone(location.tz).date() + dt.timedelta(days=1)
            later = location.next_send_time(
                dt.datetime.combine(local, location.quiet_hours_start, tzinfo=location.tz)
            )
            return Status.PLANNED, {
                "scheduled_for": later,
                "reason": f"{over} → deferred to {planning.local_label(location, later)}",
            }
        return Status.SUPPRESSED, {"reason": over}
    return None


def _cap_history(
    messages: list[OutboundMessage], now: dt.datetime
) -> dict[int, list[dt.datetime | None]]:
    """For each recipient of `messages`: when the messages that count for the cap went out.

    None stands for a message going out right now ("sending" rows have no sent_at
    yet; they count). One query for a batch; the batch's own rows are left out —
    each is added as it passes its checks, as if they had been sent one by one.
    """
    history: dict[int, list[dt.datetime | None]] = {
        (m.recipient or m.patient).pk: [] for m in messages
    }
    if not history:
        return history
    rows = (
        OutboundMessage.objects.filter(recipient_id__in=history, status__in=COUNTED)
        .exclude(kind__in=TRANSACTIONAL)
        .exclude(pk__in=[m.pk for m in messages])
        # The week's window holds the day's: the day starts less than 7 days ago.
        .filter(
            Q(sent_at__gte=now - dt.timedelta(days=7))
            | Q(sent_at__isnull=True, status=Status.SENDING)
        )
        .values_list("recipient_id", "sent_at")
    )
    for recipient_id, sent_at in rows:
        history[recipient_id].append(sent_at)
    return history


def _over_cap(history: list[dt.datetime | None], location: Location, now: dt.datetime) -> str:
    """The cap this recipient has reached ("" if another message may go out)."""
    local = now.astimezone(location.tz)
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)

    def sent_since(moment: dt.datetime) -> int:
        return sum(1 for sent_at in history if sent_at is None or sent_at >= moment)

    if sent_since(day_start) >= location.cap_per_day:
        n = location.cap_per_day
        return f"Frequency cap: {n} message{'s' if n != 1 else ''} a day already sent"
    if sent_since(now - dt.timedelta(days=7)) >= location.cap_per_week:
        return f"Frequency cap: {location.cap_per_week} messages in 7 days already sent"
    return ""


def _final_text(
    message: OutboundMessage,
    now: dt.datetime,
    siblings: list[OutboundMessage],
    templates: dict[tuple, tuple] | None = None,
) -> bool:
    """Set the words as of now: today's template, names, and the family's merge.

    Rendered again at send time so that a template edited, or a name corrected,
    after planning is what the patient reads. Returns whether they changed (the
    caller saves them, for the whole batch at once). `templates` keeps the
    templates looked up for a batch: one query per kind, channel, language and
    location rather than one per message.
    """
    from reminders import templating

    recipient = message.recipient or message.patient
    names, when = _merge_household(message, now, siblings)
    kind, channel, language, location = (
        message.kind,
        message.channel,
        recipient.language,
        message.location,
    )
    key = (kind, channel, language, location.pk)
    templates = {} if templates is None else templates
    if key not in templates:
        templates[key] = templating.template_for(
            kind=kind, channel=channel, language=language, location=location
        )
    rendered = templating.render(
        kind=kind,
        channel=channel,
        language=language,
        location=location,
        first_name=", ".join(names[:-1]) + f" & {names[-1]}" if len(names) > 1 else names[0],
        when=when,
        found=templates[key],
    )
    new_subject, new_body = rendered.subject, rendered.body
    if (new_subject, new_body) == (message.subject, message.body):
        return False
    message.subject, message.body = new_subject, new_body
    return True


def _household_siblings(
    messages: list[OutboundMessage], now: dt.datetime
) -> dict[int, list[OutboundMessage]]:
    """The family's rows each message may fold in (see `_merge_household`), locked.

    Rows of the same kind and channel for other patients, going to the same
    recipient later today and not claimed by anyone. Looked for with one plain
    query for the batch; only the few found are then locked (SKIP LOCKED, as a
    dispatcher may hold them) and checked again.
    """
    wanted: dict[tuple, tuple[OutboundMessage, dt.datetime]] = {}
    for message in messages:
        location = message.location
        key = (message.recipient_id, message.kind, message.channel)
        # The dispatcher queues one row per key and run; were there two, the first
        # folds the family in and the second finds nothing left, as one by one.
        if not message.recipient_id or not location.household_grouping or key in wanted:
            continue
        local_day_end = (now.astimezone(location.tz) + dt.timedelta(days=1)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        wanted[key] = (message, local_day_end)
    if not wanted:
        return {}

    def owner(row: OutboundMessage) -> OutboundMessage | None:
        message, day_end = wanted.get((row.recipient_id, row.kind, row.channel), (None, now))
        if message is None or row.patient_id == message.patient_id or row.scheduled_for >= day_end:
            return None
        return message

    pending = [Status.PLANNED, Status.QUEUED]
    candidates = [
        row.pk
        for row in OutboundMessage.objects.filter(
            recipient_id__in={key[0] for key in wanted}, status__in=pending
        ).only("recipient_id", "kind", "channel", "patient_id", "scheduled_for")
        if owner(row)
    ]
    if not candidates:
        return {}
    found: dict[int, list[OutboundMessage]] = {}
    for sibling in (
        OutboundMessage.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(pk__in=candidates, status__in=pending)
        .select_related("patient", "appointment")
        .order_by("scheduled_for", "id")
    ):
        if (mine := owner(sibling)) is not None:
            found.setdefault(mine.pk, []).append(sibling)
    return found


def _merge_household(
    message: OutboundMessage, now: dt.datetime, siblings: list[OutboundMessage]
) -> tuple[list[str], dt.datetime | dt.date | None]:
    """Fold the family's other messages of today into this one (household grouping).

    `siblings` (from `_household_siblings`) are suppressed as merged; this message
    names everyone. Returns the names to greet and the date (and time) to mention.
    """
    names = [message.patient.preferred_name or message.patient.first_name]
    when = _when(message)
    location = message.location
    if message.appointment is not None:
        # One visit day per message: the family's visits that day, earliest time first.
        day = message.appointment.start.astimezone(location.tz).date()
        siblings = [
            s
            for s in siblings
            if s.appointment and s.appointment.start.astimezone(location.tz).date() == day
        ]
        when = min(
            [message.appointment.start] + [s.appointment.start for s in siblings if s.appointment]
        )
    if not siblings:
        return names, _when(message)
    recipient_name = message.recipient.first_name if message.recipient else ""
    # A queued sibling's own send task then finds it "merged" and does nothing.
    OutboundMessage.objects.filter(
        pk__in=[s.pk for s in siblings], status__in=[Status.PLANNED, Status.QUEUED]
    ).update(
        status=Status.MERGED,
        merged_into=message,
        reason=f"Household: sent together in one message to {recipient_name}",
        updated_at=now,
    )
    return names + [s.patient.preferred_name or s.patient.first_name for s in siblings], when


def _when(message: OutboundMessage) -> dt.datetime | dt.date | None:
    """The date (and time) the message is about: the visit, or the recall's due date."""
    if message.appointment is not None:
        return message.appointment.start
    if message.followup is not None:
        return message.followup.due_date
    return None


def _failed(message: OutboundMessage, exc: SendError) -> str:
    """Map a provider refusal to what it means for the number and the message."""
    code = exc.code
    fields = {"error_code": code, "error_message": str(exc)[:300]}
    if code in OPTED_OUT_CODES:
        _flag_number(message.to, opted_out=True)
        return _finish(
            message,
            status=Status.SUPPRESSED,
            reason="Opted out of SMS (the carrier reports STOP)",
            **fields,
        )
    if code in UNUSABLE_CODES and message.channel == OutboundMessage.Channel.SMS:
        _flag_number(message.to, unusable=f"Twilio {code}: {UNUSABLE_CODES[code]}")
        status = _finish(message, status=Status.FAILED, **fields)
        _email_fallback(message)
        return status
    if code in FILTERED_CODES:
        return _finish(
            message,
            status=Status.FAILED,
            needs_attention=True,
            reason="The carrier blocked it as spam; not retried",
            **fields,
        )
    if exc.ambiguous:
        # Twilio may have taken it: stay "sending" until reconciliation has asked
        # Twilio (reminders.reconcile, every 5 minutes, for rows quiet for 10).
        OutboundMessage.objects.filter(
            pk=message.pk, status=Status.SENDING, attempts=message.attempts
        ).update(
            reason="No clear answer from the provider; checking before any resend",
            updated_at=timezone.now(),
            **fields,
        )
        return Status.SENDING
    if exc.retryable and message.attempts < MAX_ATTEMPTS:
        return _finish(
            message,
            status=Status.PLANNED,
            scheduled_for=timezone.now() + backoff(message.attempts),
            reason="Provider busy or unreachable; trying again",
            **fields,
        )
    return _finish(message, status=Status.FAILED, needs_attention=exc.retryable, **fields)


def _flag_number(number: str, *, opted_out: bool = False, unusable: str = "") -> None:
    """Record on every patient with this mobile number what the carrier told us."""
    from practicecrm.audit import system_actor

    with system_actor():
        for patient in Patient.objects.filter(mobile_phone=number, merged_into__isnull=True):
            if opted_out and patient.sms_opted_out_at is None:
                patient.sms_opted_out_at = timezone.now()
            elif unusable:
                patient.sms_unusable_reason = unusable
            else:
                continue
            patient_save(patient=patient, by=None)


def _email_fallback(message: OutboundMessage) -> None:
    """Plan the same step by email when the number cannot take SMS and email is consented."""
    from reminders import planning
    from reminders.templating import render

    recipient = message.recipient or message.patient
    recipient.refresh_from_db()
    kind, location = message.kind, message.location
    if planning.channel_blocker(
        recipient=recipient, location=location, kind=kind, channel=OutboundMessage.Channel.EMAIL
    ):
        return
    when = _when(message)
    text = render(
        kind=kind,
        channel=OutboundMessage.Channel.EMAIL,
        language=recipient.language,
        location=location,
        first_name=message.patient.preferred_name or message.patient.first_name,
        when=when,
    )
    OutboundMessage.objects.get_or_create(
        idempotency_key=f"{message.idempotency_key}:email-fallback",
        defaults={
            "kind": kind,
            "channel": OutboundMessage.Channel.EMAIL,
            "step": f"{message.step}:email-fallback",
            "patient": message.patient,
            "recipient": recipient,
            "location": location,
            "appointment": message.appointment,
            "followup": message.followup,
            "to": recipient.email,
            "sender": planning.sender_for(location, OutboundMessage.Channel.EMAIL),
            "subject": text.subject,
            "body": text.body,
            "scheduled_for": timezone.now(),
            "reason": "Email instead: the mobile number can't receive SMS",
        },
    )


def _finish(message: OutboundMessage, *, status: str, **fields) -> str:
    """Leave "sending" — only from "sending" and only by the attempt that claimed it,
    so neither a late duplicate nor a worker that stalled past reconciliation can
    overwrite a newer attempt."""
    moved = OutboundMessage.objects.filter(
        pk=message.pk, status=Status.SENDING, attempts=message.attempts
    ).update(status=status, updated_at=timezone.now(), **fields)
    if moved and status not in (Status.SENT, Status.SHADOW):
        _release_merged(message)
    return status


def _release_merged(message: OutboundMessage) -> None:
    """The family's rows folded into a message that did not go out wait again."""
    OutboundMessage.objects.filter(merged_into=message, status=Status.MERGED).update(
        status=Status.PLANNED, merged_into=None, reason="", updated_at=timezone.now()
    )


# Twilio's message statuses in the order they can happen; the outbox never moves back.
_PROVIDER_STATUS = {
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "undelivered": Status.UNDELIVERED,
    "failed": Status.FAILED,
}
_EARLIER = {
    Status.SENT: [Status.SENDING],
    Status.DELIVERED: [Status.SENDING, Status.SENT],
    Status.UNDELIVERED: [Status.SENDING, Status.SENT],
    Status.FAILED: [Status.SENDING, Status.SENT],
}


def message_status_update(*, provider_id: str, provider_status: str, error_code: str = "") -> bool:
    """Apply a provider status callback; returns whether the row moved.

    Callbacks arrive out of order and more than once: the UPDATE only matches rows
    in an earlier status, so "delivered" followed by a late "sent" stays delivered,
    and a repeated callback changes nothing. An undelivered message to a handset
    that is off (30003/30005) is tried again a couple of times; one the carrier
    filtered (30007) waits for a person.
    """
    new = _PROVIDER_STATUS.get(provider_status)
    if not provider_id or new is None:
        return False  # queued/accepted/sending add nothing to what the send recorded
    now = timezone.now()
    fields: dict = {"status": new, "updated_at": now}
    if error_code:
        fields["error_code"] = error_code[:20]
    rows = OutboundMessage.objects.filter(provider_id=provider_id, status__in=_EARLIER[new])
    if new in (Status.UNDELIVERED, Status.FAILED):
        if error_code in UNREACHABLE_CODES:
            retry = rows.filter(attempts__lte=MAX_UNREACHABLE_RETRIES).first()
            if retry is not None:
                return bool(
                    rows.filter(pk=retry.pk).update(
                        status=Status.PLANNED,
                        provider_id="",
                        error_code=error_code,
                        scheduled_for=now + 30 * backoff(retry.attempts),
                        reason=f"Phone unreachable (Twilio {error_code}); trying again later",
                        updated_at=now,
                    )
                )
            fields["needs_attention"] = True
            fields["reason"] = "Phone unreachable after several tries"
        elif error_code in FILTERED_CODES:
            fields["needs_attention"] = True
            fields["reason"] = "The carrier blocked it as spam; not retried"
        elif error_code in OPTED_OUT_CODES:
            for number in rows.values_list("to", flat=True):
                _flag_number(number, opted_out=True)
        elif error_code in UNUSABLE_CODES:
            for number in rows.values_list("to", flat=True):
                _flag_number(number, unusable=f"Twilio {error_code}: {UNUSABLE_CODES[error_code]}")
            failed = list(rows.select_related("patient", "recipient", "location"))
            moved = rows.update(**fields)
            for message in failed:
                _email_fallback(message)
            return bool(moved)
        else:
            fields["needs_attention"] = True
    return bool(rows.update(**fields))


# Carrier-standard keywords (case and surrounding spaces ignored).
OPT_OUT_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
OPT_IN_WORDS = {"START", "YES", "UNSTOP"}
HELP_WORDS = {"HELP", "INFO"}
CONFIRM_WORDS = {"C", "Y", "CONFIRM"}


@transaction.atomic
def inbound_receive(*, provider_id: str, from_number: str, to_number: str, body: str):
    """Act on a patient's SMS once, whatever number of times Twilio delivers it.

    A number shared by several patients (a household) acts for all of them on
    STOP/START; a confirmation needs exactly one matching next visit, otherwise it
    goes to the inbox — a guess could confirm the wrong child's appointment.
    """
    existing = InboundMessage.objects.filter(provider_id=provider_id).first()
    if existing is not None:
        return existing
    word = body.strip().upper()
    patients = list(Patient.objects.filter(mobile_phone=from_number, merged_into__isnull=True))
    location = Location.objects.filter(sms_from_number=to_number).first()
    if location is None:
        # Sent through a messaging service: the number is one of its pool. The
        # location is the one that last texted this patient from it.
        last = (
            OutboundMessage.objects.filter(to=from_number, channel=OutboundMessage.Channel.SMS)
            .exclude(sent_at=None)
            .select_related("location")
            .order_by("-sent_at")
            .first()
        )
        location = last.location if last else None
    inbound = InboundMessage(
        provider_id=provider_id,
        from_number=from_number,
        to_number=to_number,
        body=body[:1600],
        location=location,
        received_at=timezone.now(),
        action=InboundMessage.Action.INBOX,
    )
    reply: tuple[str, Appointment | None] | None = None
    if word in OPT_OUT_WORDS or word in OPT_IN_WORDS:
        opted_out = timezone.now() if word in OPT_OUT_WORDS else None
        changed = False
        for patient in patients:
            if (patient.sms_opted_out_at is None) != (opted_out is None):
                patient.sms_opted_out_at = opted_out
                patient_save(patient=patient, by=None)
                changed = True
        inbound.action = (
            InboundMessage.Action.OPT_OUT if opted_out else InboundMessage.Action.OPT_IN
        )
        if opted_out and changed:
            reply = (OutboundMessage.Kind.OPT_OUT_CONFIRMATION, None)
    elif word in HELP_WORDS:
        inbound.action = InboundMessage.Action.HELP
        reply = (OutboundMessage.Kind.HELP_REPLY, None)
    elif word in CONFIRM_WORDS:
        upcoming = Appointment.objects.filter(
            patient__in=patients,
            status=Appointment.Status.SCHEDULED,
            start__gt=timezone.now(),
            **({"location": location} if location else {}),
        ).order_by("start")
        # Each patient's next visit; more than one patient with one is ambiguous.
        nexts: dict[int, Appointment] = {}
        for appointment in upcoming:
            nexts.setdefault(appointment.patient_id, appointment)
        if len(nexts) == 1:
            (appointment,) = nexts.values()
            appointment.status = Appointment.Status.CONFIRMED
            appointment_save(appointment=appointment, by=None)
            inbound.action = InboundMessage.Action.CONFIRMED
            inbound.confirmed_appointment = appointment
            reply = (OutboundMessage.Kind.CONFIRMATION_REPLY, appointment)
        else:
            inbound.note = (
                "No upcoming appointment to confirm."
                if not nexts
                else "Several patients share this number; confirm the right visit by hand."
            )
    if not patients:
        inbound.note = inbound.note or "No patient has this mobile number."
    inbound.save()
    inbound.patients.set(patients)
    if reply is not None and patients:
        _reply(inbound, kind=reply[0], patients=patients, appointment=reply[1])
    return inbound


def _reply(
    inbound: InboundMessage, *, kind: str, patients: list[Patient], appointment: Appointment | None
) -> OutboundMessage:
    """Answer an SMS from the number it was sent to, once per inbound message.

    Answers are transactional: they go out at once, whatever the hour, and do not
    count towards the frequency cap. Sent through the outbox like everything else.
    """
    from reminders.tasks import send_message
    from reminders.templating import render

    patient = appointment.patient if appointment else patients[0]
    location = inbound.location or (appointment.location if appointment else patient.home_location)
    text = render(
        kind=kind,
        channel=OutboundMessage.Channel.SMS,
        language=patient.language,
        location=location,
        first_name=patient.preferred_name or patient.first_name,
        when=appointment.start if appointment else None,
    )
    message, created = OutboundMessage.objects.get_or_create(
        idempotency_key=f"reply:{inbound.provider_id}",
        defaults={
            "kind": kind,
            "channel": OutboundMessage.Channel.SMS,
            "patient": patient,
            "recipient": patient,
            "location": location,
            "appointment": appointment,
            "to": inbound.from_number,
            "sender": inbound.to_number or location.sms_from_number,
            "body": text.body,
            "scheduled_for": timezone.now(),
            "status": Status.QUEUED,
        },
    )
    if created:
        transaction.on_commit(partial(send_message.delay, message.pk))
    return message
