"""The demo's recall history for the dashboard and the pilot report (issue #6).

Riverside Dental — Austin is the pilot: it went live `PILOT_WEEKS_AGO` weeks ago.
Before that its front desk worked recalls from the old spreadsheet (nothing
logged here, no reminders sent, nobody signed in); since, staff sign in daily,
log their calls and the location's reminders go out. The other locations have
worked in PracticeCRM all along.

What is written, all as it would have happened:

- every visit's `created_at` is the day it was booked (2–45 days before it; the
  upcoming ones within the last month), since the scheduler export carries that;
- for follow-ups booked (scheduled or done) in the last `HISTORY_WEEKS` weeks, at
  locations and times where staff logged their work, often the call or text that
  led to the booking, 1–10 days before it, by a front-desk colleague, sometimes
  after a recall SMS;
- the pilot's appointment reminders since go-live (the last two weeks are written
  by the seeder for every location with reminders) and the "C" replies confirming
  about a third of them;
- the pilot staff's sign-ins since go-live in django-axes' access log.
"""

import datetime as dt
import random
from collections import Counter
from typing import Any

from axes.models import AccessLog
from django.db.models import Q

from followups.models import ContactAttempt, Followup
from patients.models import Appointment, Patient
from practicecrm.audit import bulk_create_audited

PILOT_SLUG = "riverside-austin"
PILOT_WEEKS_AGO = 7
PILOT_EXTRA_DAYS = 3  # so the current week of the pilot is under way, not just begun
HISTORY_WEEKS = 20
CONVERTED_SHARE = 0.45  # of booked recalls where staff log their work: after a contact
UNBOOKED_TRIED_SHARE = 0.6  # of follow-ups that lapsed in the window: tried before


def seed_recall_history(seeder: Any, recorded_by: Any) -> Counter[str]:
    """Add the history above; `seeder` is the DemoSeeder that just wrote the rest."""
    from reminders.models import InboundMessage, OutboundMessage

    rng = random.Random(f"{seeder.seed}:reports")
    now = seeder.now
    counts: Counter[str] = Counter()
    pilot_site = seeder.sites.get(PILOT_SLUG)
    go_live = None
    if pilot_site is not None:
        go_live = pilot_site.today - dt.timedelta(weeks=PILOT_WEEKS_AGO, days=PILOT_EXTRA_DAYS)
        pilot_site.location.go_live_date = go_live
        pilot_site.location.save(update_fields=["go_live_date"])

    # Booking days: the visit was recorded when it was booked, not when the demo ran.
    for appointment in seeder.appointments:
        if appointment.start > now:
            lead = dt.timedelta(days=rng.randint(0, 30), hours=rng.randint(0, 8))
            appointment.created_at = now - lead
        else:
            lead = dt.timedelta(days=rng.randint(2, 45), hours=rng.randint(0, 8))
            appointment.created_at = appointment.start - lead
    # Only the recording time moves; the rows' CREATE entries are already written.
    Appointment.objects.bulk_update(seeder.appointments, ["created_at"], batch_size=2000)

    # A follow-up closed by a visit was closed when the visit was completed.
    done = list(
        Followup.objects.filter(
            status=Followup.Status.DONE, scheduled_appointment__isnull=False
        ).select_related("scheduled_appointment")
    )
    for followup in done:
        assert followup.scheduled_appointment is not None
        followup.closed_at = followup.scheduled_appointment.end
    Followup.objects.bulk_update(done, ["closed_at"], batch_size=2000)

    site_of = {site.location.pk: site for site in seeder.sites.values()}
    pilot_start = (
        dt.datetime.combine(go_live, dt.time.min, tzinfo=pilot_site.location.tz)
        if pilot_site is not None and go_live is not None
        else None
    )
    since = now - dt.timedelta(weeks=HISTORY_WEEKS)
    booked = (
        Followup.objects.filter(
            status__in=(Followup.Status.SCHEDULED, Followup.Status.DONE),
            scheduled_appointment__created_at__gte=since,
        )
        .filter(~Q(patient__status=Patient.Status.DECEASED))
        .select_related("scheduled_appointment", "patient")
        .order_by("pk")
    )
    attempts: dict[Any, list[ContactAttempt]] = {}
    messages = []
    for followup in booked:
        site = site_of[followup.location_id]
        assert followup.scheduled_appointment is not None
        booked_at = followup.scheduled_appointment.created_at
        if rng.random() >= CONVERTED_SHARE or not (site.front_desk or site.recorders):
            continue
        at = booked_at - dt.timedelta(days=rng.randint(1, 10), hours=rng.randint(0, 5))
        before_pilot = site is pilot_site and pilot_start is not None
        if before_pilot and pilot_start is not None and at < pilot_start:
            continue  # the spreadsheet era: nothing was logged here
        staff = rng.choice(site.front_desk or site.recorders)
        patient = followup.patient
        channel = "sms" if patient.mobile_phone and rng.random() < 0.3 else "call"
        attempts.setdefault(staff, []).append(
            ContactAttempt(
                followup=followup,
                location_id=followup.location_id,
                channel=channel,
                outcome="booked" if rng.random() < 0.7 else "left_message",
                note="",
                phone=patient.mobile_phone or patient.home_phone,
                staff=staff,
                attempted_at=at,
            )
        )
        sent = at - dt.timedelta(days=rng.randint(3, 12))
        if (
            patient.mobile_phone
            and rng.random() < 0.35
            and not (before_pilot and pilot_start is not None and sent < pilot_start)
        ):
            messages.append(
                OutboundMessage(
                    idempotency_key=f"demo-recall:{followup.pk}:{sent:%Y%m%d}",
                    kind="recall",
                    channel="sms",
                    step="0d:sms",
                    patient=patient,
                    recipient=patient,
                    location=site.location,
                    followup=followup,
                    to=patient.mobile_phone,
                    sender=site.location.sms_from_number,
                    body=f"{site.location.name}: it's time for your next visit. "
                    f"Call {site.location.phone} to book.",
                    scheduled_for=sent,
                    sent_at=sent,
                    attempts=1,
                    status="delivered",
                    provider_id=f"SM{rng.getrandbits(128):032x}",
                )
            )
    # Calls that led nowhere: follow-ups that lapsed in the history window, tried
    # once in the weeks before they lapsed.
    unbooked = (
        Followup.objects.filter(
            status=Followup.Status.LAPSED,
            lapses_on__gte=(now - dt.timedelta(weeks=HISTORY_WEEKS - 8)).date(),
            lapses_on__lt=(now - dt.timedelta(weeks=2)).date(),
        )
        .select_related("patient")
        .order_by("pk")
    )
    for followup in unbooked:
        site = site_of[followup.location_id]
        if rng.random() >= UNBOOKED_TRIED_SHARE or not (site.front_desk or site.recorders):
            continue
        day = followup.lapses_on - dt.timedelta(days=rng.randint(5, 50))
        at = dt.datetime.combine(day, dt.time(rng.randint(9, 16)), tzinfo=site.location.tz)
        too_early = at < now - dt.timedelta(weeks=HISTORY_WEEKS)
        if too_early or (pilot_start is not None and site is pilot_site and at < pilot_start):
            continue
        staff = rng.choice(site.front_desk or site.recorders)
        patient = followup.patient
        attempts.setdefault(staff, []).append(
            ContactAttempt(
                followup=followup,
                location_id=followup.location_id,
                channel="call",
                outcome=rng.choice(("no_answer", "left_message", "declined")),
                note="",
                phone=patient.mobile_phone or patient.home_phone,
                staff=staff,
                attempted_at=at,
            )
        )
    for staff, rows in attempts.items():
        with recorded_by(staff):
            bulk_create_audited(ContactAttempt, rows)
        counts["attempts_booked_history"] += len(rows)
    OutboundMessage.objects.bulk_create(messages, batch_size=1000)
    counts["recall_messages_history"] = len(messages)

    if pilot_site is not None and go_live is not None:
        counts.update(_pilot_reminders(seeder, pilot_site, go_live, rng))
        counts["pilot_sign_ins"] = _sign_ins(seeder, pilot_site, go_live, rng)
    # Confirmations of reminded visits (any location with reminders), as "C" replies do.
    reminded = (
        OutboundMessage.objects.filter(
            kind="appointment_reminder", status="delivered", appointment__isnull=False
        )
        .exclude(appointment__status=Appointment.Status.CANCELLED)
        .select_related("appointment", "location")
        .order_by("pk")
    )
    confirmations = []
    for message in reminded:
        if rng.random() < 0.35 and message.sent_at:
            confirmations.append(
                InboundMessage(
                    provider_id=f"SM{rng.getrandbits(128):032x}",
                    from_number=message.to,
                    to_number=message.sender,
                    body="C",
                    location=message.location,
                    action=InboundMessage.Action.CONFIRMED,
                    confirmed_appointment=message.appointment,
                    received_at=message.sent_at + dt.timedelta(minutes=rng.randint(2, 240)),
                )
            )
    InboundMessage.objects.bulk_create(confirmations, batch_size=1000)
    counts["confirmations"] = len(confirmations)
    return counts


def _pilot_reminders(seeder: Any, site: Any, go_live: dt.date, rng: random.Random) -> Counter[str]:
    """The pilot's 2-day SMS reminders from go-live until the seeder's last fortnight."""
    from reminders.models import OutboundMessage

    location, now = site.location, seeder.now
    start = dt.datetime.combine(go_live, dt.time.min, tzinfo=location.tz)
    until = now - dt.timedelta(days=14)
    rows = []
    patients = {
        p.pk: p
        for p in Patient.objects.filter(
            pk__in={a.patient_id for a in seeder.appointments if a.location_id == location.pk}
        )
    }
    for appointment in seeder.appointments:
        # Reminders go out two days ahead: the first ones for visits two days in.
        first = start + dt.timedelta(days=2)
        if appointment.location_id != location.pk or not (first <= appointment.start < until):
            continue
        patient = patients[appointment.patient_id]
        if not patient.mobile_phone or patient.do_not_contact:
            continue
        sent_at = appointment.start - dt.timedelta(days=2)
        failed = rng.random() < 0.04
        rows.append(
            OutboundMessage(
                idempotency_key=f"demo-appt:{appointment.pk}:2880m:sms",
                kind="appointment_reminder",
                channel="sms",
                step="2880m:sms",
                patient=patient,
                recipient=patient,
                location=location,
                appointment=appointment,
                to=patient.mobile_phone,
                sender=location.sms_from_number,
                body=f"{location.name}: see you on {appointment.start:%b %-d}. Reply C to confirm.",
                scheduled_for=sent_at,
                sent_at=sent_at,
                attempts=1,
                status="undelivered" if failed else "delivered",
                error_code="30003" if failed else "",
                provider_id=f"SM{rng.getrandbits(128):032x}",
            )
        )
    OutboundMessage.objects.bulk_create(rows, batch_size=1000)
    return Counter(pilot_reminders=len(rows))


def _sign_ins(seeder: Any, site: Any, go_live: dt.date, rng: random.Random) -> int:
    """Weekday sign-ins of the pilot's staff since go-live (django-axes' access log)."""
    from locations.models import LocationGrant

    users = (
        LocationGrant.objects.filter(location=site.location)
        .exclude(user__is_superuser=True)
        .values_list("user__username", flat=True)
        .distinct()
    )
    chance = {"frontdesk": 0.9, "frontdesk2": 0.75, "manager": 0.5}
    rows = []
    day = go_live
    while day <= site.today:
        if day.weekday() < 5:
            for username in users:
                if rng.random() < chance.get(username, 0.4):
                    at = dt.datetime.combine(
                        day,
                        dt.time(rng.randint(7, 10), rng.randint(0, 59)),
                        tzinfo=site.location.tz,
                    )
                    if at < seeder.now:
                        rows.append(
                            AccessLog(
                                username=username,
                                attempt_time=at,
                                ip_address="192.0.2.10",
                                user_agent="Demo browser",
                                http_accept="text/html",
                                path_info="/login/",
                            )
                        )
        day += dt.timedelta(days=1)
    times = [row.attempt_time for row in rows]
    AccessLog.objects.bulk_create(rows)
    # attempt_time is auto_now_add: put the sign-in times back.
    for row, at in zip(rows, times, strict=True):
        row.attempt_time = at
    AccessLog.objects.bulk_update(rows, ["attempt_time"], batch_size=1000)
    return len(rows)
