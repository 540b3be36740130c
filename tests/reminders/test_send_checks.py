"""What happens at send time: frequency caps, Twilio's error codes, replies to texts."""

import datetime as dt
import zoneinfo

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reminders.models import MessageTemplate, OutboundMessage
from reminders.reconcile import reconcile_stale_sending
from reminders.services import dispatch_due, inbound_receive, message_send
from reminders.twilio_sim import error, lost_response
from tests.factories import (
    AppointmentFactory,
    ChannelConsentFactory,
    FollowupFactory,
    LocationFactory,
    PatientFactory,
)
from tests.reminders.test_outbox import SID, TOKEN
from tests.twilio_server import TwilioServer

Status = OutboundMessage.Status
Kind = OutboundMessage.Kind
CHICAGO = zoneinfo.ZoneInfo("America/Chicago")
# A Monday morning; the simulation runs on its own clock, not the wall clock.
T0 = dt.datetime(2027, 3, 1, 7, 0, tzinfo=CHICAGO)


@pytest.fixture
def clinic(db):
    return LocationFactory(
        name="Riverside Dental",
        time_zone="America/Chicago",
        sms_from_number="+15125550101",
        module_appointment_reminders=True,
        business_hours={d: ["08:00", "18:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat")},
    )


@pytest.fixture
def patient(clinic):
    patient = PatientFactory(home_location=clinic, first_name="Ana")
    for channel in ("sms", "email"):
        ChannelConsentFactory(patient=patient, channel=channel)
    return patient


@pytest.fixture
def twilio(settings):
    server = TwilioServer(account_sid=SID, auth_token=TOKEN).start()
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = SID, TOKEN
    settings.TWILIO_API_BASE_URL = server.url
    yield server
    server.stop()


def outbox_row(patient, *, key, at, kind=Kind.APPOINTMENT_REMINDER, channel="sms", **links):
    return OutboundMessage.objects.create(
        idempotency_key=key,
        kind=kind,
        channel=channel,
        patient=patient,
        recipient=patient,
        location=patient.home_location,
        to=patient.mobile_phone if channel == "sms" else patient.email,
        sender="+15125550101",
        body="Riverside Dental: see you soon.",
        scheduled_for=at,
        **links,
    )


def run_until(end: dt.datetime) -> None:
    """Play the dispatcher and worker forward, jumping from one due row to the next."""
    while True:
        nxt = (
            OutboundMessage.objects.filter(status=Status.PLANNED)
            .order_by("scheduled_for")
            .values_list("scheduled_for", flat=True)
            .first()
        )
        if nxt is None or nxt > end:
            return
        for pk in dispatch_due(now=nxt):
            message_send(message_id=pk, now=nxt)


# --- frequency caps (property) ---------------------------------------------------------------

ROWS = st.lists(
    st.tuples(
        st.sampled_from([Kind.APPOINTMENT_REMINDER, Kind.RECALL]),
        st.integers(min_value=0, max_value=13),  # day
        st.integers(min_value=0, max_value=23),  # hour
    ),
    min_size=1,
    max_size=14,
)


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(planned=ROWS, caps=st.sampled_from([(1, 3), (2, 5), (1, 7)]))
def test_no_patient_ever_gets_more_than_the_cap(clinic, patient, planned, caps):
    with transaction.atomic():
        clinic.cap_per_day, clinic.cap_per_week = caps
        clinic.save()
        visit = AppointmentFactory(
            patient=patient,
            start=T0 + dt.timedelta(days=40),
            end=T0 + dt.timedelta(days=40, hours=1),
        )
        followup = FollowupFactory(
            patient=patient,
            location=clinic,
            due_date=T0.date(),
            lapses_on=T0.date() + dt.timedelta(days=180),
        )
        OutboundMessage.objects.all().delete()  # planning's own rows; the example's below
        for i, (kind, day, hour) in enumerate(planned):
            links = {"appointment": visit} if kind == Kind.APPOINTMENT_REMINDER else {}
            outbox_row(
                patient,
                key=f"p{i}",
                kind=kind,
                at=T0 + dt.timedelta(days=day, hours=hour),
                followup=followup if kind == Kind.RECALL else None,
                **links,
            )
        run_until(T0 + dt.timedelta(days=35))
        sent = sorted(
            OutboundMessage.objects.filter(status=Status.SENT).values_list("sent_at", flat=True)
        )
        per_day: dict[dt.date, int] = {}
        for moment in sent:
            day = moment.astimezone(CHICAGO).date()
            per_day[day] = per_day.get(day, 0) + 1
        assert max(per_day.values(), default=0) <= clinic.cap_per_day
        for moment in sent:
            window = [m for m in sent if moment <= m < moment + dt.timedelta(days=7)]
            assert len(window) <= clinic.cap_per_week
        # Nothing is dropped silently: every row is sent, or says why not.
        for row in OutboundMessage.objects.exclude(status=Status.SENT):
            assert row.reason, row
        # Recalls over the cap wait for another day instead of being dropped.
        assert not OutboundMessage.objects.filter(
            kind=Kind.RECALL, status=Status.SUPPRESSED, reason__startswith="Frequency cap"
        ).exists()
        assert all(m.astimezone(CHICAGO).time() >= dt.time(8) for m in sent)
        transaction.set_rollback(True)


# --- Twilio's answers ------------------------------------------------------------------------


def queued(patient, **kwargs):
    visit = AppointmentFactory(
        patient=patient,
        start=timezone.now() + dt.timedelta(days=3),
        end=timezone.now() + dt.timedelta(days=3, hours=1),
    )
    OutboundMessage.objects.all().delete()
    row = outbox_row(patient, key="k", at=timezone.now(), appointment=visit, **kwargs)
    OutboundMessage.objects.filter(pk=row.pk).update(status=Status.QUEUED)
    return row


def send_at_noon(row) -> str:
    noon = dt.datetime.combine(
        timezone.now().astimezone(CHICAGO).date(), dt.time(12), tzinfo=CHICAGO
    )
    while noon.weekday() == 6:
        noon += dt.timedelta(days=1)
    return message_send(message_id=row.pk, now=noon)


@pytest.mark.django_db
def test_twilio_21610_marks_the_number_opted_out_and_never_retries(patient, twilio):
    twilio.fail_with = (400, 21610, "Attempt to send to unsubscribed recipient")
    row = queued(patient)
    assert send_at_noon(row) == Status.SUPPRESSED
    row.refresh_from_db()
    patient.refresh_from_db()
    assert patient.sms_opted_out_at is not None
    assert (row.error_code, row.reason) == ("21610", "Opted out of SMS (the carrier reports STOP)")


@pytest.mark.django_db
@pytest.mark.parametrize("code", ["21211", "21614", "30006"])
def test_a_number_that_cannot_take_sms_is_flagged_and_email_takes_over(patient, twilio, code):
    twilio.fail_with = (400, int(code), "Not a mobile number")
    row = queued(patient)
    assert send_at_noon(row) == Status.FAILED
    patient.refresh_from_db()
    assert patient.sms_unusable_reason.startswith(f"Twilio {code}")
    fallback = OutboundMessage.objects.get(idempotency_key="k:email-fallback")
    assert (fallback.channel, fallback.to, fallback.status) == ("email", patient.email, "planned")
    # The next SMS to this number is not even tried.
    later = AppointmentFactory(
        patient=patient,
        start=timezone.now() + dt.timedelta(days=10),
        end=timezone.now() + dt.timedelta(days=10, hours=1),
    )
    sms = OutboundMessage.objects.get(appointment=later, step="2880m:sms")
    assert sms.status == Status.SUPPRESSED and "can't receive SMS" in sms.reason


@pytest.mark.django_db
def test_a_carrier_block_on_create_alerts_staff_without_retrying(patient, twilio):
    twilio.fail_with = (400, 30007, "Message filtered")
    row = queued(patient)
    assert send_at_noon(row) == Status.FAILED
    row.refresh_from_db()
    assert row.needs_attention and row.attempts == 1


@pytest.mark.django_db
def test_a_rate_limit_is_retried_later_with_backoff(patient, twilio):
    twilio.fail_with = (429, 20429, "Too many requests")
    row = queued(patient)
    assert send_at_noon(row) == Status.PLANNED
    row.refresh_from_db()
    assert row.reason == "Provider busy or unreachable; trying again"
    assert row.scheduled_for > timezone.now()


@pytest.mark.django_db
@pytest.mark.parametrize("twilio_kept_it", [True, False])
def test_a_5xx_on_create_is_reconciled_before_any_resend(patient, twilio, twilio_kept_it):
    twilio.script(lost_response() if twilio_kept_it else error(500))
    row = queued(patient)
    assert send_at_noon(row) == Status.SENDING  # not retried blindly
    row.refresh_from_db()
    assert row.reason == "No clear answer from the provider; checking before any resend"
    reconcile_stale_sending(older_than=dt.timedelta(0))
    row.refresh_from_db()
    if twilio_kept_it:
        assert (row.status, row.provider_id) == (Status.SENT, twilio.messages[0].sid)
    else:
        assert row.status == Status.PLANNED  # Twilio never had it: safe to send again
        for pk in dispatch_due(now=row.scheduled_for):
            send_at_noon(OutboundMessage.objects.get(pk=pk))
    assert len(twilio.messages) == 1


# --- replies to texts ------------------------------------------------------------------------


@pytest.mark.django_db
def test_stop_gets_one_confirmation_and_help_gets_the_locations_contact(patient, clinic):
    with transaction.atomic():
        inbound_receive(
            provider_id="SMin1",
            from_number=patient.mobile_phone,
            to_number="+15125550101",
            body=" stop ",
        )
    inbound_receive(
        provider_id="SMin1",
        from_number=patient.mobile_phone,
        to_number="+15125550101",
        body=" stop ",
    )  # Twilio retried the webhook
    inbound_receive(
        provider_id="SMin2",
        from_number=patient.mobile_phone,
        to_number="+15125550101",
        body="STOP",
    )  # already out: nothing more to confirm
    confirmations = OutboundMessage.objects.filter(kind=Kind.OPT_OUT_CONFIRMATION)
    assert confirmations.count() == 1
    assert "no longer get texts" in confirmations[0].body
    assert confirmations[0].to == patient.mobile_phone
    assert confirmations[0].sender == "+15125550101"
    inbound_receive(
        provider_id="SMin3",
        from_number=patient.mobile_phone,
        to_number="+15125550101",
        body="help",
    )
    help_reply = OutboundMessage.objects.get(kind=Kind.HELP_REPLY)
    assert "Riverside Dental" in help_reply.body and "(512) 555-0100" in help_reply.body
    # Replies go out even though the number is opted out, and whatever the hour.
    assert send_at_noon(help_reply) == Status.SENT


@pytest.mark.django_db
def test_confirming_by_text_confirms_and_answers(patient, clinic):
    # A mid-morning visit on a weekday at least two days off, whatever the wall
    # clock says: a visit at night would have its reminder fall in quiet hours.
    day = timezone.now().astimezone(CHICAGO).date() + dt.timedelta(days=2)
    while day.weekday() not in (1, 2, 3, 4):
        day += dt.timedelta(days=1)
    start = dt.datetime.combine(day, dt.time(10, 30), tzinfo=CHICAGO)
    visit = AppointmentFactory(patient=patient, start=start, end=start + dt.timedelta(hours=1))
    inbound_receive(
        provider_id="SMc", from_number=patient.mobile_phone, to_number="+15125550101", body="C"
    )
    visit.refresh_from_db()
    assert visit.status == "confirmed"
    reply = OutboundMessage.objects.get(kind=Kind.CONFIRMATION_REPLY)
    assert reply.appointment == visit and "is confirmed" in reply.body
    # Confirmed visits keep their reminders.
    assert OutboundMessage.objects.filter(
        appointment=visit, kind=Kind.APPOINTMENT_REMINDER, status=Status.PLANNED
    ).exists()


@pytest.mark.django_db
def test_stop_suppresses_the_next_reminder_with_its_reason(patient, clinic):
    visit = AppointmentFactory(
        patient=patient,
        start=timezone.now() + dt.timedelta(days=9),
        end=timezone.now() + dt.timedelta(days=9, hours=1),
    )
    inbound_receive(
        provider_id="SMs", from_number=patient.mobile_phone, to_number="+15125550101", body="Stop"
    )
    sms = OutboundMessage.objects.get(appointment=visit, step="2880m:sms")
    assert (sms.status, sms.reason) == (Status.SUPPRESSED, "Opted out of SMS (replied STOP)")
    email = OutboundMessage.objects.get(appointment=visit, step="10080m:email")
    assert email.status == Status.PLANNED


# --- email ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_reminder_email_has_html_and_a_working_one_click_unsubscribe(
    patient, client, mailoutbox, settings
):
    settings.SITE_URL = "https://crm.example"
    visit = AppointmentFactory(
        patient=patient,
        start=timezone.now() + dt.timedelta(days=20),
        end=timezone.now() + dt.timedelta(days=20, hours=1),
    )
    row = OutboundMessage.objects.get(appointment=visit, channel="email")
    OutboundMessage.objects.filter(pk=row.pk).update(status=Status.QUEUED)
    assert send_at_noon(row) == Status.SENT
    (mail,) = mailoutbox
    html, mimetype = mail.alternatives[0]
    assert mimetype == "text/html" and "Hi Ana," in html
    link = mail.extra_headers["List-Unsubscribe"].strip("<>")
    assert link.startswith("https://crm.example/reminders/unsubscribe/")
    assert f"Unsubscribe: {link}" in mail.body and link in html
    path = link.removeprefix("https://crm.example")
    assert client.get(path).status_code == 200  # a page with a button; nothing changed yet
    assert patient.consents.get(channel="email").status == "granted"
    assert client.post(path).status_code == 200  # what a mail client's one-click does
    assert patient.consents.get(channel="email").status == "refused"
    later = AppointmentFactory(
        patient=patient,
        start=timezone.now() + dt.timedelta(days=30),
        end=timezone.now() + dt.timedelta(days=30, hours=1),
    )
    email = OutboundMessage.objects.get(appointment=later, channel="email")
    assert (email.status, email.reason) == (Status.SUPPRESSED, "Email consent refused")
    assert client.get(path[:-3] + "xyz/").status_code == 404  # a forged token


@pytest.mark.django_db
def test_the_words_are_those_of_the_template_at_send_time(patient, clinic, twilio):
    row = queued(patient)
    MessageTemplate.objects.create(
        kind=Kind.APPOINTMENT_REMINDER,
        channel="sms",
        language="en",
        location=clinic,
        body="{location_name}: {first_name}, your visit is {date} at {time}. Reply STOP to end.",
    )
    assert send_at_noon(row) == Status.SENT
    (sent,) = twilio.received
    assert sent["Body"].startswith("Riverside Dental: Ana, your visit is ")
