"""The Today worklist and the follow-up actions, through HTTP."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from followups.models import CadenceRule, ContactAttempt, Followup, FollowupType
from locations.models import Role
from patients.models import ChannelConsent, Patient
from tests.factories import AppointmentTypeFactory, PatientFactory, ProviderFactory, staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def recall(db):
    return FollowupType.objects.create(name="Hygiene recall", code="hygiene-recall", value=80)


@pytest.fixture
def rule(recall):
    hygiene = AppointmentTypeFactory(name="Hygiene cleaning", code="hygiene")
    rule = CadenceRule.objects.create(
        name="Hygiene every 6 months", followup_type=recall, interval_value=6
    )
    rule.trigger_types.set([hygiene])
    rule.satisfying_types.set([hygiene])
    return rule


def make_followup(patient, followup_type, *, days_overdue=5, rule=None, **kwargs) -> Followup:
    due = timezone.localdate() - dt.timedelta(days=days_overdue)
    return Followup.objects.create(
        patient=patient,
        followup_type=followup_type,
        location=patient.home_location,
        rule=rule,
        due_date=due,
        lapses_on=due + dt.timedelta(days=180),
        **kwargs,
    )


def test_it_sends_staff_home_to_today(client, front_desk):
    client.force_login(front_desk)
    assert client.get(reverse("home")).url == reverse("followups:today")


def test_its_filters_offer_the_staff_and_providers_of_own_locations_only(
    client, front_desk, north, south, recall
):
    ada = ProviderFactory(name="Dr Ada North", title="DDS", locations=[north])
    plain = ProviderFactory(name="Dr Cy Plain", title="", locations=[north])
    ProviderFactory(name="Dr Bo South", title="", locations=[south])
    colleague = staff(Role.FRONT_DESK, north, username="kim", first_name="Kim", last_name="Lee")
    staff(Role.FRONT_DESK, south, username="elsewhere", first_name="Sam", last_name="Far")
    nameless = staff(Role.FRONT_DESK, north, username="temp-desk", first_name="", last_name="")
    client.force_login(front_desk)

    page = client.get(
        reverse("followups:today"), {"assigned": colleague.pk, "type": recall.pk}
    ).content.decode()

    # Labels as the models word them (Provider.__str__, User.get_full_name).
    assert f'<option value="{ada.pk}">{ada}</option>' in page and str(ada) == "Dr Ada North, DDS"
    assert f'<option value="{plain.pk}">{plain}</option>' in page
    assert "Dr Bo South" not in page
    assert f'<option value="{colleague.pk}" selected>{colleague.get_full_name()}</option>' in page
    assert f'<option value="{nameless.pk}">temp-desk</option>' in page
    assert "Sam Far" not in page
    assert f'<option value="{recall.pk}" selected>Hygiene recall</option>' in page
    assert page.count(" selected>") == 2


def test_it_lists_due_follow_ups_of_own_location_only(
    client, front_desk, north_patient, south_patient, recall
):
    mine = make_followup(north_patient, recall)
    make_followup(south_patient, recall)
    client.force_login(front_desk)
    response = client.get(reverse("followups:today"))
    assert [row["f"] for row in response.context["rows"]] == [mine]
    html = response.content.decode()
    assert "Núñez" in html and "Okafor" not in html
    assert response.context["counts"] == {"overdue": 0, "due": 1, "upcoming": 0, "lapsed": 0}


def test_past_the_count_cap_the_tabs_and_pages_say_so(client, front_desk, north, recall, settings):
    settings.WORKLIST_COUNT_CAP = 30
    for i in range(31):
        make_followup(PatientFactory(home_location=north), recall, days_overdue=40 + i)
    make_followup(PatientFactory(home_location=north), recall, days_overdue=2)
    client.force_login(front_desk)

    response = client.get(reverse("followups:today"))
    html = response.content.decode()
    assert '<span class="bucket-count">31+</span> To contact' in html
    assert '<span class="bucket-count">30+</span> Overdue' in html
    assert '<span class="bucket-count">1</span> Due' in html
    assert "Page 1 of 2 · 31+ follow-ups" in html
    assert "Pages reach the first 31 of these follow-ups" in html
    # The pages hold the counted rows, most overdue first: the 26th to the 31st.
    second = client.get(reverse("followups:today") + "?page=2").context["rows"]
    assert [row["f"].due_date for row in second] == [
        timezone.localdate() - dt.timedelta(days) for days in range(45, 39, -1)
    ]

    exact = client.get(reverse("followups:today") + "?bucket=due").content.decode()
    assert "Pages reach the first" not in exact


def test_it_shows_preferred_channel_consent_and_contact_on_the_row(
    client, front_desk, north_patient, recall
):
    north_patient.preferred_channel = Patient.PreferredChannel.SMS
    north_patient.save()
    ChannelConsent.objects.create(
        patient=north_patient,
        channel="sms",
        status="granted",
        method="verbal",
        recorded_at=timezone.now(),
    )
    make_followup(north_patient, recall)
    client.force_login(front_desk)
    html = client.get(reverse("followups:today")).content.decode()
    assert 'class="chip chip-sms">SMS</span>' in html
    assert "Consented" in html
    assert f'href="tel:{north_patient.mobile_phone}"' in html
    assert f'href="mailto:{north_patient.email}"' in html


def test_the_rows_attempt_form_starts_on_the_patients_channel_and_no_answer(
    client, front_desk, north, recall
):
    by_email = PatientFactory(home_location=north, preferred_channel="email")
    by_phone = PatientFactory(home_location=north, preferred_channel="phone")
    email_row, phone_row = make_followup(by_email, recall), make_followup(by_phone, recall)
    client.force_login(front_desk)
    html = client.get(reverse("followups:today")).content.decode()

    def select(name: str, followup: Followup) -> str:
        start = html.index(f'<select name="{name}" id="id_{name}_{followup.pk}">')
        return html[start : html.index("</select>", start)]

    for row, channel in ((email_row, "email"), (phone_row, "call")):
        channels = select("channel", row)
        outcomes = select("outcome", row)
        assert channels.count("<option ") == len(ContactAttempt.Channel.choices)
        assert outcomes.count("<option ") == len(ContactAttempt.Outcome.choices)
        assert channels.count(" selected") == outcomes.count(" selected") == 1
        assert f'<option value="{channel}" selected>' in channels
        assert '<option value="no_answer" selected>No answer</option>' in outcomes


def test_it_says_what_to_do_when_nobody_is_due(client, front_desk):
    client.force_login(front_desk)
    html = client.get(reverse("followups:today")).content.decode()
    assert "Nobody is due today" in html
    assert "upcoming follow-ups" in html


def test_it_remembers_the_chosen_location(client, north, south, recall):
    user = staff(Role.FRONT_DESK, north, south, username="two")
    client.force_login(user)
    client.get(reverse("followups:today"), {"location": south.pk})
    assert client.get(reverse("followups:today")).context["location"] == south


def test_it_logs_an_attempt_from_the_row_without_leaving_the_page(
    client, front_desk, north_patient, recall
):
    followup = make_followup(north_patient, recall)
    client.force_login(front_desk)
    response = client.post(
        reverse("followups:log_attempt", args=[followup.pk]),
        {
            "channel": "call",
            "outcome": "no_answer",
            "note": "rang twice",
            "phone": north_patient.mobile_phone,
        },
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith(f'<tr id="followup-{followup.pk}"')
    assert "Logged: No answer" in html
    assert "1 attempt" in html
    attempt = ContactAttempt.objects.get()
    assert (attempt.staff, attempt.note) == (front_desk, "rang twice")
    followup.refresh_from_db()
    assert followup.status == Followup.Status.CONTACTED


def test_it_redirects_back_after_an_attempt_without_htmx(client, front_desk, north_patient, recall):
    followup = make_followup(north_patient, recall)
    client.force_login(front_desk)
    response = client.post(
        reverse("followups:log_attempt", args=[followup.pk]),
        {"channel": "call", "outcome": "left_message", "next": reverse("followups:today")},
    )
    assert response.url == reverse("followups:today")


def test_it_refuses_an_attempt_without_an_outcome_and_keeps_the_row(
    client, front_desk, north_patient, recall
):
    followup = make_followup(north_patient, recall)
    client.force_login(front_desk)
    response = client.post(
        reverse("followups:log_attempt", args=[followup.pk]),
        {"channel": "call"},
        HTTP_HX_REQUEST="true",
    )
    assert "Choose how you tried and what happened." in response.content.decode()
    assert not ContactAttempt.objects.exists()


def test_it_answers_404_for_an_attempt_on_another_locations_follow_up(
    client, front_desk, south_patient, recall
):
    followup = make_followup(south_patient, recall)
    client.force_login(front_desk)
    response = client.post(
        reverse("followups:log_attempt", args=[followup.pk]),
        {"channel": "call", "outcome": "no_answer"},
    )
    assert response.status_code == 404
    assert not ContactAttempt.objects.exists()


def test_it_never_redirects_off_site_after_an_action(client, front_desk, north_patient, recall):
    followup = make_followup(north_patient, recall)
    client.force_login(front_desk)
    response = client.post(
        reverse("followups:log_attempt", args=[followup.pk]),
        {"channel": "call", "outcome": "no_answer", "next": "https://evil.example/"},
    )
    assert response.url == north_patient.get_absolute_url()


def test_it_shows_follow_ups_and_attempts_on_the_patient_page(
    client, front_desk, north_patient, recall
):
    followup = make_followup(north_patient, recall)
    ContactAttempt.objects.create(
        followup=followup,
        channel="call",
        outcome="left_message",
        staff=front_desk,
        attempted_at=timezone.now(),
    )
    client.force_login(front_desk)
    html = client.get(north_patient.get_absolute_url()).content.decode()
    assert "Hygiene recall" in html
    assert "Left message" in html
    assert reverse("followups:snooze", args=[followup.pk]) in html


def test_it_snoozes_dismisses_and_reopens(client, front_desk, north_patient, recall):
    followup = make_followup(north_patient, recall)
    client.force_login(front_desk)
    until = timezone.localdate() + dt.timedelta(days=10)
    client.post(reverse("followups:snooze", args=[followup.pk]), {"until": until.isoformat()})
    followup.refresh_from_db()
    assert followup.snoozed_until == until
    assert not client.get(reverse("followups:today")).context["rows"]

    client.post(reverse("followups:dismiss", args=[followup.pk]), {"reason": ""})
    followup.refresh_from_db()
    assert followup.status == Followup.Status.OPEN  # a reason is required

    client.post(reverse("followups:dismiss", args=[followup.pk]), {"reason": "Moved dentist"})
    followup.refresh_from_db()
    assert (followup.status, followup.dismissed_reason) == ("dismissed", "Moved dentist")

    client.post(reverse("followups:reopen", args=[followup.pk]))
    followup.refresh_from_db()
    assert followup.status == Followup.Status.OPEN


def test_it_refuses_a_snooze_in_the_past(client, front_desk, north_patient, recall):
    followup = make_followup(north_patient, recall)
    client.force_login(front_desk)
    response = client.post(
        reverse("followups:snooze", args=[followup.pk]), {"until": "2000-01-01"}, follow=True
    )
    assert "Pick a date after today." in response.content.decode()
    followup.refresh_from_db()
    assert followup.snoozed_until is None


def test_it_adds_a_follow_up_by_hand_and_refuses_a_duplicate(
    client, front_desk, north_patient, recall
):
    client.force_login(front_desk)
    url = reverse("followups:create", args=[north_patient.pk])
    data = {
        "followup_type": recall.pk,
        "location": north_patient.home_location_id,
        "due_date": timezone.localdate().isoformat(),
        "reason": "Asked to be called in spring",
    }
    assert client.post(url, data).status_code == 302
    again = client.post(url, data)
    assert again.status_code == 200
    assert "already has an open Hygiene recall follow-up" in again.content.decode()
    assert Followup.objects.count() == 1


def test_it_records_a_discharge_and_plans_the_follow_up(client, front_desk, north_patient, recall):
    rule = CadenceRule.objects.create(
        name="Re-evaluation after discharge",
        event=CadenceRule.Event.DISCHARGED,
        followup_type=recall,
        interval_value=14,
        interval_unit="days",
    )
    rule.satisfying_types.set([AppointmentTypeFactory()])
    client.force_login(front_desk)
    response = client.post(
        reverse("followups:discharge", args=[north_patient.pk]),
        {"location": north_patient.home_location_id, "discharged_on": "2026-11-01"},
    )
    assert response.status_code == 302
    assert Followup.objects.get().due_date == dt.date(2026, 11, 15)


def _worklist_queries(client, user) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(reverse("followups:today"), {"page": 1})
    return len(ctx.captured_queries), len(response.context["rows"])


def test_it_reads_the_worklist_in_the_same_number_of_queries_for_10_or_200_rows(
    client, front_desk, north, recall
):
    client.force_login(front_desk)
    patients = [PatientFactory(home_location=north) for _ in range(200)]
    for p in patients[:10]:
        make_followup(p, recall)
    client.get(reverse("followups:today"))  # warm: session start, content types
    small, rows_small = _worklist_queries(client, front_desk)
    for p in patients[10:]:
        f = make_followup(p, recall)
        ContactAttempt.objects.create(
            followup=f, channel="call", outcome="no_answer", attempted_at=timezone.now()
        )
    big, rows_big = _worklist_queries(client, front_desk)
    assert (rows_small, rows_big) == (10, 25)
    assert small == big


def test_it_offers_only_the_patients_own_locations_for_a_follow_up(client, north, south, recall):
    both = staff(Role.FRONT_DESK, north, south, username="both")
    patient = PatientFactory(home_location=north)
    client.force_login(both)
    form = client.get(reverse("followups:create", args=[patient.pk])).context["form"]
    assert list(form.fields["location"].queryset) == [north]


def test_it_refuses_a_due_date_years_ahead_instead_of_failing(
    client, front_desk, north_patient, recall
):
    client.force_login(front_desk)
    response = client.post(
        reverse("followups:create", args=[north_patient.pk]),
        {
            "followup_type": recall.pk,
            "location": north_patient.home_location_id,
            "due_date": "9999-12-31",
            "reason": "typo",
        },
    )
    assert response.status_code == 200
    assert "more than five years ahead" in response.content.decode()
    assert not Followup.objects.exists()


def test_it_offers_no_actions_on_rows_where_the_user_only_reads(client, north, south, recall):
    user = staff(Role.FRONT_DESK, north, username="mixed")
    from tests.factories import GrantFactory

    GrantFactory(user=user, location=south, role=Role.CARE_STAFF)
    mine = make_followup(PatientFactory(home_location=north), recall)
    theirs = make_followup(PatientFactory(home_location=south), recall)
    client.force_login(user)
    rows = {
        row["f"]: row["can_act"] for row in client.get(reverse("followups:today")).context["rows"]
    }
    assert rows == {mine: True, theirs: False}


def test_it_assigns_a_follow_up_to_staff_of_its_location_only(
    client, front_desk, north_patient, south, recall
):
    followup = make_followup(north_patient, recall)
    elsewhere = staff(Role.FRONT_DESK, south, username="elsewhere")
    client.force_login(front_desk)
    url = reverse("followups:assign", args=[followup.pk])
    response = client.post(url, {"assigned_to": elsewhere.pk}, follow=True)
    assert "choose someone who works at North Clinic" in response.content.decode()
    followup.refresh_from_db()
    assert followup.assigned_to is None

    client.post(url, {"assigned_to": front_desk.pk})
    followup.refresh_from_db()
    assert followup.assigned_to == front_desk
    mine = client.get(reverse("followups:today"), {"assigned": "me"}).context["rows"]
    assert [row["f"] for row in mine] == [followup]
