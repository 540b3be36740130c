"""Outreach setup pages: who may read and change them, validation next to the field,
previews with a real patient, and replanning queued after commit."""

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from locations.models import Role
from reminders import tasks
from reminders.models import MessageTemplate, OutreachPlan, ReminderSchedule
from tests.factories import (
    AppointmentFactory,
    AppointmentTypeFactory,
    CadenceRuleFactory,
    PatientFactory,
    staff,
)

pytestmark = pytest.mark.django_db

SETUP = reverse("reminders:setup")
PLANS = reverse("reminders:plans")
TEMPLATES = reverse("reminders:templates")


@pytest.fixture
def admin(north):
    return staff(Role.ADMIN, north, username="admin")


@pytest.fixture
def queued(monkeypatch):
    """The location ids each replan task was queued with."""
    calls: list[list[int]] = []
    monkeypatch.setattr(tasks.replan_locations, "delay", lambda ids: calls.append(ids))
    return calls


def steps_data(*lines: tuple[str, str, str], prefix="steps") -> dict:
    data = {f"{prefix}-TOTAL_FORMS": str(len(lines)), f"{prefix}-INITIAL_FORMS": "0"}
    for n, (amount, unit, channel) in enumerate(lines):
        data |= {
            f"{prefix}-{n}-amount": amount,
            f"{prefix}-{n}-unit": unit,
            f"{prefix}-{n}-channel": channel,
        }
    return data


def location_data(**overrides) -> dict:
    data = {
        "module_appointment_reminders": "on",
        "module_recalls": "on",
        "quiet_hours_start": "08:00",
        "quiet_hours_end": "20:00",
        "cap_per_day": "1",
        "cap_per_week": "3",
        "household_grouping": "on",
    }
    return {**data, **overrides}


# --- the setup page and the location's rules --------------------------------------------


def test_it_shows_the_built_in_schedule_when_the_location_has_none(client, admin, north):
    client.force_login(admin)
    page = client.get(SETUP).content.decode()
    assert "Built-in default: email 7 days, SMS 2 days, SMS 2 hours" in page
    assert reverse("reminders:location_edit", args=[north.pk]) in page


def test_it_lets_an_admin_change_quiet_hours_and_replans_on_commit(
    client, admin, north, queued, django_capture_on_commit_callbacks
):
    client.force_login(admin)
    url = reverse("reminders:location_edit", args=[north.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, location_data(quiet_hours_start="09:00", shadow_mode="on"))
    assert response.status_code == 302
    north.refresh_from_db()
    assert north.quiet_hours_start == dt.time(9)
    assert north.shadow_mode
    assert queued == [[north.pk]]


def test_it_does_not_queue_a_replan_before_commit(client, admin, north, queued):
    client.force_login(admin)
    url = reverse("reminders:location_edit", args=[north.pk])
    assert client.post(url, location_data(cap_per_day="2")).status_code == 302
    # The test's transaction never commits, so nothing may have been queued.
    assert queued == []


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"quiet_hours_start": "21:00"},
            "quiet_hours_end",
            "“Send until” must be later than “send from”.",
        ),
        ({"cap_per_day": "0"}, "cap_per_day", "At least 1, or no reminder could ever go out."),
        (
            {"cap_per_day": "3", "cap_per_week": "2"},
            "cap_per_week",
            "The weekly limit cannot be lower than the daily one.",
        ),
    ],
)
def test_it_refuses_bad_location_rules_next_to_the_field(
    client, admin, north, queued, overrides, field, message
):
    client.force_login(admin)
    response = client.post(
        reverse("reminders:location_edit", args=[north.pk]), location_data(**overrides)
    )
    assert response.status_code == 200
    assert response.context["form"].errors == {field: [message]}
    assert message in response.content.decode()


def test_it_shows_a_manager_the_setup_read_only(client, manager, north):
    client.force_login(manager)
    page = client.get(SETUP).content.decode()
    assert "You can read this setup; an admin changes it." in page
    assert reverse("reminders:location_edit", args=[north.pk]) not in page
    assert reverse("reminders:schedule_create", args=[north.pk]) not in page
    assert client.get(reverse("reminders:location_edit", args=[north.pk])).status_code == 404
    response = client.post(reverse("reminders:location_edit", args=[north.pk]), location_data())
    assert response.status_code == 404


@pytest.mark.parametrize("who", ["front_desk", "care_staff"])
def test_it_hides_setup_from_front_desk_and_care_staff(client, request, north, who):
    client.force_login(request.getfixturevalue(who))
    for url in (SETUP, PLANS, TEMPLATES, reverse("reminders:location_edit", args=[north.pk])):
        assert client.get(url).status_code == 404, url
    assert "Outreach setup" not in client.get(reverse("followups:today")).content.decode()


def test_it_answers_404_for_another_locations_setup(client, admin, south):
    client.force_login(admin)
    assert client.get(SETUP, {"location": south.pk}).status_code == 404
    assert client.get(reverse("reminders:location_edit", args=[south.pk])).status_code == 404
    other = ReminderSchedule.objects.create(
        location=south, steps=[{"minutes_before": 60, "channel": "sms"}]
    )
    assert client.get(reverse("reminders:schedule_edit", args=[other.pk])).status_code == 404


def test_it_links_outreach_setup_for_managers_and_admins(client, manager):
    client.force_login(manager)
    page = client.get(reverse("followups:today")).content.decode()
    assert f'href="{SETUP}"' in page


# --- reminder schedules ------------------------------------------------------------------


def test_it_adds_a_schedule_for_one_visit_type(
    client, admin, north, queued, django_capture_on_commit_callbacks
):
    hygiene = AppointmentTypeFactory(name="Hygiene cleaning")
    client.force_login(admin)
    data = {"appointment_type": hygiene.pk, "is_active": "on"} | steps_data(
        ("3", "days", "email"), ("90", "minutes", "sms"), ("", "days", "sms")
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("reminders:schedule_create", args=[north.pk]), data)
    assert response.status_code == 302
    schedule = ReminderSchedule.objects.get(location=north, appointment_type=hygiene)
    assert schedule.steps == [
        {"minutes_before": 3 * 1440, "channel": "email"},
        {"minutes_before": 90, "channel": "sms"},
    ]
    assert queued == [[north.pk]]
    page = client.get(SETUP).content.decode()
    assert "3 days · Email" in page and "90 minutes · SMS" in page


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((("0", "hours", "sms"),), "Give a time before the visit of at least 1"),
        ((("-2", "days", "sms"),), "Give a time before the visit of at least 1"),
        ((("2", "days", "sms"), ("48", "hours", "email")), "Step 1 already goes out at this time"),
        ((("", "days", "sms"),), "Give at least one step."),
    ],
)
def test_it_refuses_bad_steps_next_to_the_step(client, admin, north, queued, lines, message):
    client.force_login(admin)
    data = {"appointment_type": "", "is_active": "on"} | steps_data(*lines)
    response = client.post(reverse("reminders:schedule_create", args=[north.pk]), data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ReminderSchedule.objects.exists()
    if len(lines) == 2:
        # The duplicate is marked on the second line, not the first.
        assert response.context["steps"].errors[0] == {}
        assert "amount" in response.context["steps"].errors[1]


def test_it_switches_a_schedule_off_without_deleting_it(client, admin, north, queued):
    schedule = ReminderSchedule.objects.create(
        location=north, steps=[{"minutes_before": 120, "channel": "sms"}]
    )
    client.force_login(admin)
    url = reverse("reminders:schedule_edit", args=[schedule.pk])
    form = client.get(url)
    assert form.context["steps"].forms[0].initial == {
        "amount": 2,
        "unit": "hours",
        "channel": "sms",
    }
    response = client.post(url, steps_data(("2", "hours", "sms")))  # "Active" unticked
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert not schedule.is_active
    assert schedule.steps == [{"minutes_before": 120, "channel": "sms"}]


def test_it_refuses_a_second_default_schedule(client, admin, north):
    ReminderSchedule.objects.create(
        location=north, steps=[{"minutes_before": 60, "channel": "sms"}]
    )
    client.force_login(admin)
    data = {"appointment_type": "", "is_active": "on"} | steps_data(("1", "days", "sms"))
    response = client.post(reverse("reminders:schedule_create", args=[north.pk]), data)
    assert "already has a default schedule" in response.content.decode()
    assert ReminderSchedule.objects.count() == 1


# --- recall outreach plans ---------------------------------------------------------------


def plan_data(name: str, *lines: tuple[str, str]) -> dict:
    data = {"name": name, "is_active": "on", "steps-TOTAL_FORMS": str(len(lines))}
    data["steps-INITIAL_FORMS"] = "0"
    for n, (days, channel) in enumerate(lines):
        data |= {f"steps-{n}-amount": days, f"steps-{n}-channel": channel}
    return data


def test_it_lists_plans_with_the_rules_that_use_them(client, manager, north):
    CadenceRuleFactory(
        name="Hygiene every 6 months", outreach_plan="Standard recall", locations=[north]
    )
    client.force_login(manager)
    page = client.get(PLANS).content.decode()
    assert "Standard recall" in page
    assert "Hygiene every 6 months" in page
    assert "14 days before due · Email" in page
    assert reverse("reminders:plan_create") not in page


def test_it_renames_a_plan_and_its_rules_follow(
    client, admin, north, queued, django_capture_on_commit_callbacks
):
    rule = CadenceRuleFactory(outreach_plan="Standard recall", locations=[north])
    plan = OutreachPlan.objects.get(name="Standard recall")
    client.force_login(admin)
    data = plan_data("Hygiene recall plan", ("-7", "email"), ("0", "sms"), ("21", "preferred"))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("reminders:plan_edit", args=[plan.pk]), data)
    assert response.status_code == 302
    plan.refresh_from_db()
    assert plan.name == "Hygiene recall plan"
    assert plan.steps[0] == {"days": -7, "channel": "email"}
    rule.refresh_from_db()
    assert rule.outreach_plan == "Hygiene recall plan"
    assert queued == [[north.pk]]


def test_it_refuses_to_change_a_plan_used_at_a_location_the_admin_does_not_run(
    client, admin, south
):
    CadenceRuleFactory(outreach_plan="Standard recall", locations=[south])
    plan = OutreachPlan.objects.get(name="Standard recall")
    client.force_login(admin)
    assert client.get(reverse("reminders:plan_edit", args=[plan.pk])).status_code == 404


def test_it_refuses_a_duplicate_day_and_a_year_away(client, admin, north):
    client.force_login(admin)
    data = plan_data("Twice", ("0", "sms"), ("0", "email"), ("400", "sms"))
    response = client.post(reverse("reminders:plan_create"), data)
    html = response.content.decode()
    assert "Keep steps within a year of the due date" in html
    assert not OutreachPlan.objects.filter(name="Twice").exists()
    data = plan_data("Twice", ("0", "sms"), ("0", "email"))
    assert (
        "Step 1 already goes out at this time"
        in client.post(reverse("reminders:plan_create"), data).content.decode()
    )


def test_it_offers_only_active_plans_on_the_rule_form(client, admin, north):
    OutreachPlan.objects.create(
        name="Old plan", steps=[{"days": 0, "channel": "sms"}], is_active=False
    )
    client.force_login(admin)
    choices = dict(
        client.get(reverse("followups:rule_create")).context["form"].fields["outreach_plan"].choices
    )
    assert choices[""] == "No automated outreach — call list only"
    assert "Standard recall" in choices
    assert "Old plan" not in choices


# --- templates ---------------------------------------------------------------------------


def template_data(**overrides) -> dict:
    data = {
        "kind": "appointment_reminder",
        "channel": "sms",
        "language": "en",
        "subject": "",
        "body": "{location_name}: see you {date} at {time}. Call {location_phone}.",
    }
    return {**data, **overrides}


def test_it_lists_defaults_and_offers_an_override(client, admin, north):
    client.force_login(admin)
    page = client.get(TEMPLATES).content.decode()
    assert "Hi {first_name}, see you {date} at {time}." in page
    assert reverse("reminders:template_create", args=[north.pk]) in page


def test_it_saves_a_locations_own_template(client, admin, north):
    client.force_login(admin)
    url = reverse("reminders:template_create", args=[north.pk])
    assert client.post(url, template_data()).status_code == 302
    row = MessageTemplate.objects.get(location=north)
    assert row.body.startswith("{location_name}: see you")


def test_it_refuses_an_unknown_placeholder_next_to_the_body(client, admin, north):
    client.force_login(admin)
    url = reverse("reminders:template_create", args=[north.pk])
    response = client.post(url, template_data(body="Hi {first_name}, your {diagnosis} visit."))
    errors = response.context["form"].errors
    assert list(errors) == ["body"]
    assert errors["body"][0].startswith("{diagnosis} is not a placeholder you can use.")
    assert not MessageTemplate.objects.filter(location=north).exists()


def test_it_refuses_an_sms_of_three_parts_with_the_longest_values(client, admin, north):
    PatientFactory(home_location=north, first_name="Maximiliana-Josefina")
    client.force_login(admin)
    body = "{first_name}, " + "please remember your visit at {location_name} on {date}. " * 5
    response = client.post(
        reverse("reminders:template_create", args=[north.pk]), template_data(body=body)
    )
    error = response.context["form"].errors["body"][0]
    assert "this SMS is 3 parts" in error
    assert not MessageTemplate.objects.filter(location=north).exists()


def test_it_previews_with_a_real_patient_without_saving(client, admin, north):
    patient = PatientFactory(
        home_location=north, first_name="Zoë", preferred_name="", last_name="Núñez"
    )
    visit = AppointmentFactory(
        patient=patient, start=timezone.now() + dt.timedelta(days=3), status="scheduled"
    )
    client.force_login(admin)
    url = reverse("reminders:template_create", args=[north.pk])
    data = template_data(body="Hi {first_name}, see you {date} at {location_name}.")
    response = client.post(url, data | {"preview_patient": patient.pk, "preview": "1"})
    assert response.status_code == 200
    preview = response.context["preview"]
    local_day = visit.start.astimezone(north.tz).strftime("%b %-d")
    assert preview.body.startswith("Hi Zoë, see you ")
    assert local_day in preview.body
    assert preview.segments == 1  # "ë" is in the GSM alphabet
    html = response.content.decode()
    assert "As Zoë Núñez would get it" in html
    assert "1 SMS part" in html
    assert not MessageTemplate.objects.filter(location=north).exists()


def test_it_offers_only_the_locations_visible_patients_for_preview(client, admin, north, south):
    mine = PatientFactory(home_location=north)
    theirs = PatientFactory(home_location=south, last_name="Okafor")
    client.force_login(admin)
    url = reverse("reminders:template_create", args=[north.pk])
    form = client.get(url).context["form"]
    assert list(form.fields["preview_patient"].queryset) == [mine]
    response = client.post(url, template_data() | {"preview_patient": theirs.pk, "preview": "1"})
    assert "preview_patient" in response.context["form"].errors
    assert response.context["preview"] is None
    assert "Okafor" not in response.content.decode()


def test_it_resets_an_override_only_on_post(client, admin, north):
    row = MessageTemplate.objects.create(location=north, **template_data())
    client.force_login(admin)
    url = reverse("reminders:template_reset", args=[row.pk])
    assert "Reset to the default text?" in client.get(url).content.decode()
    assert MessageTemplate.objects.filter(pk=row.pk).exists()
    assert client.post(url).status_code == 302
    assert not MessageTemplate.objects.filter(pk=row.pk).exists()


def test_it_does_not_let_a_manager_edit_templates(client, manager, north):
    row = MessageTemplate.objects.create(location=north, **template_data())
    client.force_login(manager)
    page = client.get(TEMPLATES).content.decode()
    assert reverse("reminders:template_edit", args=[row.pk]) not in page
    response = client.post(
        reverse("reminders:template_edit", args=[row.pk]), template_data(body="x")
    )
    assert response.status_code == 404
    row.refresh_from_db()
    assert row.body.startswith("{location_name}")
