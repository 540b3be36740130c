"""What staff see of the outbox: the patient page, Today rows and the Messages page."""

import datetime as dt
import itertools

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from followups.models import Followup
from reminders.models import InboundMessage, OutboundMessage
from tests.factories import ChannelConsentFactory, FollowupTypeFactory, PatientFactory

pytestmark = pytest.mark.django_db

Status = OutboundMessage.Status
_keys = itertools.count()


def outbox(patient, *, status=Status.SENT, when=None, channel="sms", kind="recall", **kwargs):
    when = when or timezone.now() - dt.timedelta(hours=1)
    return OutboundMessage.objects.create(
        idempotency_key=f"test:{next(_keys)}",
        kind=kind,
        channel=channel,
        patient=patient,
        recipient=kwargs.pop("recipient", patient),
        location=kwargs.pop("location", patient.home_location),
        to="+15125550101" if channel == "sms" else "zoe@example.com",
        sender="+15125550199",
        body=kwargs.pop("body", "North Clinic: time for your check-up. Call 512-555-0199."),
        scheduled_for=when,
        sent_at=when if status in (Status.SENT, Status.DELIVERED) else None,
        status=status,
        **kwargs,
    )


def reply(patient, *, body="Can I come Friday instead?", read=False, **kwargs):
    message = InboundMessage.objects.create(
        provider_id=f"SM{next(_keys)}",
        from_number="+15125550101",
        to_number="+15125550199",
        body=body,
        location=kwargs.pop("location", patient.home_location),
        action=kwargs.pop("action", InboundMessage.Action.INBOX),
        received_at=timezone.now() - dt.timedelta(minutes=5),
        read_at=timezone.now() if read else None,
        **kwargs,
    )
    message.patients.add(patient)
    return message


def recall_followup(patient) -> Followup:
    due = timezone.localdate() - dt.timedelta(days=5)
    return Followup.objects.create(
        patient=patient,
        followup_type=FollowupTypeFactory(),
        location=patient.home_location,
        due_date=due,
        lapses_on=due + dt.timedelta(days=180),
    )


def page(client, tab="all", **params):
    return client.get(reverse("reminders:messages"), {"tab": tab, **params})


# --- the patient page -------------------------------------------------------------------


def test_it_shows_the_patients_messages_with_reasons_in_plain_words(
    client, front_desk, north_patient
):
    outbox(north_patient, status=Status.DELIVERED, body="See you soon, Zoë")
    outbox(north_patient, status=Status.SUPPRESSED, reason="No SMS consent")
    outbox(
        north_patient,
        status=Status.PLANNED,
        when=timezone.now() + dt.timedelta(hours=3),
        reason="Quiet hours → deferred to Thu Nov 26, 08:00",
    )
    outbox(
        north_patient,
        status=Status.FAILED,
        reason="The carrier blocked it as spam; not retried",
        error_code="30007",
    )
    client.force_login(front_desk)
    html = client.get(north_patient.get_absolute_url()).content.decode()
    assert "Not sent: No SMS consent" in html
    assert "Deferred: Quiet hours → deferred to Thu Nov 26, 08:00" in html
    assert "Failed: The carrier blocked it as spam; not retried (error 30007)" in html
    assert "See you soon, Zoë" in html  # inside <details>
    assert "Delivered" in html


def test_it_shows_replies_and_marks_one_read_from_the_patient_page(
    client, front_desk, north_patient
):
    inbox = reply(north_patient, body="Running late, sorry")
    reply(north_patient, body="STOP", action=InboundMessage.Action.OPT_OUT)
    client.force_login(front_desk)
    html = client.get(north_patient.get_absolute_url()).content.decode()
    assert "Running late, sorry" in html
    assert "Opted out (STOP)" in html
    url = reverse("reminders:reply_read", args=[inbox.pk])
    assert url in html
    response = client.post(url, {"next": north_patient.get_absolute_url()})
    assert response.status_code == 302
    assert response["Location"] == north_patient.get_absolute_url()
    inbox.refresh_from_db()
    assert inbox.read_at is not None


def test_it_offers_mark_read_only_to_roles_that_change_patients(client, care_staff, north_patient):
    inbox = reply(north_patient)
    client.force_login(care_staff)
    html = client.get(north_patient.get_absolute_url()).content.decode()
    assert "Can I come Friday instead?" in html
    assert reverse("reminders:reply_read", args=[inbox.pk]) not in html
    assert client.post(reverse("reminders:reply_read", args=[inbox.pk])).status_code == 404


def test_it_shows_narrowed_consent_on_the_patient_page(client, front_desk, north_patient):
    ChannelConsentFactory(
        patient=north_patient, channel="sms", status="granted", recall_outreach=False
    )
    client.force_login(front_desk)
    html = client.get(north_patient.get_absolute_url()).content.decode()
    assert "appointment reminders only, not recall outreach" in html


def test_it_saves_narrowed_consent_from_the_preferences_form(client, front_desk, north_patient):
    client.force_login(front_desk)
    url = reverse("patients:preferences", args=[north_patient.pk])
    form = client.get(url).context["form"]
    assert form.initial["sms_recall_outreach"] is True
    response = client.post(
        url,
        {
            "preferred_channel": "sms",
            "language": "en",
            "sms_consent": "granted",
            "email_consent": "granted",
            "call_consent": "",
            "consent_method": "verbal",
            "consent_scopes": "1",
            "sms_appointment_reminders": "on",
            "email_appointment_reminders": "on",
            "email_recall_outreach": "on",
        },
    )
    assert response.status_code == 302
    consents = {c.channel: c for c in north_patient.consents.all()}
    assert (consents["sms"].appointment_reminders, consents["sms"].recall_outreach) == (
        True,
        False,
    )
    assert consents["email"].recall_outreach is True


def test_it_keeps_the_patient_page_query_count_constant_in_messages(
    client, front_desk, north_patient
):
    client.force_login(front_desk)
    url = north_patient.get_absolute_url()
    outbox(north_patient)
    reply(north_patient)
    client.get(url)
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    for i in range(40):
        outbox(north_patient, status=Status.SUPPRESSED if i % 2 else Status.SENT, reason="x")
        reply(north_patient)
    with CaptureQueriesContext(connection) as many:
        html = client.get(url).content.decode()
    assert len(few) == len(many)
    assert "Show all messages" in html


# --- Today rows ---------------------------------------------------------------------------


def test_it_shows_recall_outreach_on_the_today_row(client, front_desk, north_patient):
    followup = recall_followup(north_patient)
    OutboundMessage.objects.filter(followup=followup).delete()  # whatever planning wrote
    sent = timezone.now() - dt.timedelta(days=2)
    outbox(north_patient, followup=followup, status=Status.DELIVERED, when=sent)
    outbox(
        north_patient,
        followup=followup,
        channel="email",
        status=Status.PLANNED,
        when=timezone.now() + dt.timedelta(days=8),
    )
    client.force_login(front_desk)
    html = client.get(reverse("followups:today")).content.decode()
    local = sent.astimezone(north_patient.home_location.tz)
    assert f"SMS sent {local:%b} {local.day}" in html
    assert "delivered" in html
    assert "Next: Email" in html
    OutboundMessage.objects.filter(followup=followup, status=Status.PLANNED).update(
        status=Status.SUPPRESSED, reason="No email consent"
    )
    html = client.get(reverse("followups:today")).content.decode()
    assert "Not sent: No email consent" in html
    assert "Call list" in html


def test_today_rows_show_their_outreach_in_the_same_queries_for_2_or_12_rows(
    client, front_desk, north
):
    def add(n):
        for _ in range(n):
            patient = PatientFactory(home_location=north)
            followup = recall_followup(patient)
            OutboundMessage.objects.filter(followup=followup).delete()
            outbox(patient, followup=followup, status=Status.FAILED, error_code=30006)
            outbox(patient, followup=followup, status=Status.DELIVERED)
            outbox(
                patient,
                followup=followup,
                channel="email",
                status=Status.PLANNED,
                reason="Quiet hours",
                when=timezone.now() + dt.timedelta(days=3),
            )

    def today():
        with CaptureQueriesContext(connection) as captured:
            html = client.get(reverse("followups:today")).content.decode()
        return len(captured), html

    client.force_login(front_desk)
    add(2)
    today()
    few, html = today()
    assert html.count('data-testid="outreach"') == 2
    assert html.count("Next: Email") == 2 and html.count("(Deferred: Quiet hours)") == 2
    add(10)
    many, html = today()
    assert html.count('data-testid="outreach"') == 12
    # No message reads its location or a column left out one by one.
    assert many == few


# --- the Messages page -----------------------------------------------------------------


def test_it_puts_messages_on_the_right_tabs(client, front_desk, north_patient):
    due = outbox(
        north_patient, status=Status.PLANNED, when=timezone.now() + dt.timedelta(minutes=5)
    )
    failed = outbox(
        north_patient, status=Status.FAILED, reason="Provider refused", error_code="21211"
    )
    old = outbox(north_patient, status=Status.SENT, when=timezone.now() - dt.timedelta(days=40))
    client.force_login(front_desk)
    queue = page(client, "queue", location="").context
    assert [m.pk for m in queue["page"].object_list] == [due.pk]
    attention = page(client, "attention").context
    assert [m.pk for m in attention["page"].object_list] == [failed.pk]
    every = page(client, "all").context
    assert {m.pk for m in every["page"].object_list} >= {due.pk, failed.pk, old.pk}
    assert every["counts"]["queue"] == 1
    assert every["counts"]["attention"] == 1


def test_it_marks_a_failure_handled(client, front_desk, north_patient):
    failed = outbox(north_patient, status=Status.FAILED, needs_attention=True, reason="Blocked")
    client.force_login(front_desk)
    html = page(client, "attention").content.decode()
    assert "Failed: Blocked" in html
    url = reverse("reminders:message_handled", args=[failed.pk])
    response = client.post(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Handled" in response.content.decode()
    failed.refresh_from_db()
    assert failed.handled_at is not None and not failed.needs_attention
    assert list(page(client, "attention").context["page"].object_list) == []


def test_it_lists_replies_unread_first_and_marks_them_read(client, front_desk, north_patient):
    read = reply(north_patient, body="Thanks!", read=True)
    unread = reply(north_patient, body="Is parking free?")
    client.force_login(front_desk)
    response = page(client, "replies")
    assert [r.pk for r in response.context["page"].object_list] == [unread.pk, read.pk]
    assert response.context["counts"]["replies"] == 1
    assert 'class="nav-count"' in response.content.decode()
    assert client.post(reverse("reminders:reply_read", args=[unread.pk])).status_code == 302
    unread.refresh_from_db()
    assert unread.read_at is not None
    assert 'class="nav-count"' not in page(client, "replies").content.decode()


def test_it_filters_by_location_and_remembers_it(client, north, south, north_patient):
    from locations.models import Role
    from tests.factories import GrantFactory, staff

    both = staff(Role.FRONT_DESK, north, username="both")
    GrantFactory(user=both, location=south, role=Role.FRONT_DESK)
    south_patient = PatientFactory(home_location=south)
    here = outbox(north_patient)
    there = outbox(south_patient)
    client.force_login(both)
    shown = {m.pk for m in page(client, location=south.pk).context["page"].object_list}
    assert there.pk in shown and here.pk not in shown
    shown = {m.pk for m in page(client).context["page"].object_list}
    assert there.pk in shown and here.pk not in shown  # remembered in the session
    shown = {m.pk for m in page(client, location="").context["page"].object_list}
    assert {here.pk, there.pk} <= shown


def test_it_filters_by_channel_status_and_dates(client, front_desk, north_patient):
    sms = outbox(north_patient, channel="sms", status=Status.SENT)
    email = outbox(north_patient, channel="email", status=Status.SUPPRESSED, reason="No email")
    client.force_login(front_desk)
    assert [m.pk for m in page(client, channel="email").context["page"].object_list] == [email.pk]
    assert [m.pk for m in page(client, status="sent").context["page"].object_list] == [sms.pk]
    later = (timezone.localdate() + dt.timedelta(days=3)).isoformat()
    response = page(client, since=later)
    assert list(response.context["page"].object_list) == []
    assert "Nothing matches these filters" in response.content.decode()


def test_it_never_shows_another_locations_messages(client, front_desk, south_patient):
    theirs = outbox(south_patient, status=Status.FAILED, needs_attention=True)
    their_reply = reply(south_patient)
    client.force_login(front_desk)
    for tab in ("queue", "attention", "all", "replies"):
        response = page(client, tab, location="")
        assert "Okafor" not in response.content.decode(), tab
    assert client.post(reverse("reminders:message_handled", args=[theirs.pk])).status_code == 404
    assert client.post(reverse("reminders:reply_read", args=[their_reply.pk])).status_code == 404
    theirs.refresh_from_db()
    their_reply.refresh_from_db()
    assert theirs.handled_at is None and their_reply.read_at is None


def test_it_explains_empty_tabs(client, front_desk):
    client.force_login(front_desk)
    assert "Nothing waiting to go out today" in page(client, "queue").content.decode()
    assert "No failures need attention" in page(client, "attention").content.decode()
    assert "No replies waiting" in page(client, "replies").content.decode()


@pytest.mark.parametrize("tab", ["queue", "attention", "all", "replies"])
def test_it_reads_each_tab_in_the_same_number_of_queries_for_2_or_60_rows(
    client, front_desk, north_patient, tab
):
    def fill(n: int) -> None:
        for i in range(n):
            patient = PatientFactory(home_location=north_patient.home_location)
            status = (Status.PLANNED, Status.FAILED, Status.SUPPRESSED)[i % 3]
            outbox(patient, status=status, when=timezone.now() + dt.timedelta(minutes=i))
            reply(patient)

    client.force_login(front_desk)
    fill(2)
    page(client, tab)  # warm: session, content types
    with CaptureQueriesContext(connection) as few:
        page(client, tab)
    fill(58)
    with CaptureQueriesContext(connection) as many:
        response = page(client, tab)
    assert len(response.context["page"].object_list) > 2
    assert len(few) == len(many)


@pytest.mark.django_db
def test_a_household_contact_at_another_location_is_not_shown(client, front_desk, north, south):
    """The child is North's patient; the parent who receives the texts is South's."""
    parent = PatientFactory(home_location=south, first_name="Ngozi", mobile_phone="+15125550177")
    child = PatientFactory(home_location=north, first_name="Chidi")
    OutboundMessage.objects.create(
        idempotency_key="household-other-location",
        kind="appointment_reminder",
        channel="sms",
        patient=child,
        recipient=parent,
        location=north,
        to=parent.mobile_phone,
        sender="+15125550101",
        body="North Clinic: see you soon.",
        scheduled_for=timezone.now(),
    )
    client.force_login(front_desk)
    page = client.get(reverse("reminders:messages") + "?tab=all").content.decode()
    assert "Chidi" in page
    assert "Ngozi" not in page and "555-0177" not in page
    assert "a household contact at another location" in page
