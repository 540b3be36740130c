"""Cadence rules pages: validation, overlaps, who may read and change them, audit."""

import re

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from followups import services
from followups.models import CadenceRule
from locations.models import Role
from tests.factories import (
    AppointmentTypeFactory,
    CadenceRuleFactory,
    FollowupTypeFactory,
    LocationFactory,
    staff,
)

pytestmark = pytest.mark.django_db

CREATE = reverse("followups:rule_create")
LIST = reverse("followups:rules")


@pytest.fixture
def hygiene(db):
    return AppointmentTypeFactory(name="Hygiene cleaning", code="hygiene")


@pytest.fixture
def exam(db):
    return AppointmentTypeFactory(name="Periodic exam", code="exam")


@pytest.fixture
def recall(db):
    return FollowupTypeFactory(name="Hygiene recall", code="hygiene-recall")


@pytest.fixture
def admin(north):
    return staff(Role.ADMIN, north, username="admin")


@pytest.fixture
def admin_everywhere(north, south):
    return staff(Role.ADMIN, north, south, username="admin-everywhere")


def rule_at(name, recall, triggers, *locations, event="completed", **kwargs):
    return CadenceRuleFactory(
        name=name,
        followup_type=recall,
        event=event,
        all_locations=not locations,
        trigger_types=triggers,
        satisfying_types=triggers or [AppointmentTypeFactory()],
        locations=list(locations),
        **kwargs,
    )


def form_data(recall, triggers, locations, **overrides) -> dict:
    data = {
        "name": "Hygiene every 6 months",
        "event": "completed",
        "trigger_types": [t.pk for t in triggers],
        "interval_value": "6",
        "interval_unit": "months",
        "followup_type": recall.pk,
        "satisfying_types": [t.pk for t in triggers],
        "locations": [loc.pk for loc in locations],
        "outreach_plan": "Standard recall",
        "max_attempts": "3",
        "lapse_after_days": "180",
        "is_active": "on",
    }
    return {**data, **overrides}


def post_as(client, user, data, url=CREATE):
    client.force_login(user)
    return client.post(url, data)


def errors_of(response) -> dict:
    assert response.status_code == 200, "a refused form is shown again"
    return response.context["form"].errors


# --- validation: each refusal is next to its field, and what was typed stays -----------


@pytest.mark.parametrize("interval", ["0", "-3"])
def test_it_refuses_a_zero_or_negative_interval(client, admin, north, recall, hygiene, interval):
    data = form_data(recall, [hygiene], [north], name="Typed name", interval_value=interval)
    response = post_as(client, admin, data)
    assert errors_of(response) == {
        "interval_value": [
            "The interval must be at least 1: a follow-up due on the day of the visit, "
            "or before it, would be overdue at once."
        ]
    }
    html = response.content.decode()
    assert 'value="Typed name"' in html
    assert f'value="{interval}"' in html
    assert 'value="Standard recall"' in html
    assert not CadenceRule.objects.exists()


def test_it_refuses_an_interval_over_ten_years(client, admin, north, recall, hygiene):
    response = post_as(
        client,
        admin,
        form_data(recall, [hygiene], [north], interval_value="11", interval_unit="years"),
    )
    assert errors_of(response)["interval_value"] == ["At most 10 years (10 years)."]


def test_it_refuses_a_completed_rule_without_trigger_types(client, admin, north, recall, hygiene):
    data = form_data(recall, [], [north], satisfying_types=[hygiene.pk], name="No trigger")
    response = post_as(client, admin, data)
    errors = errors_of(response)
    assert list(errors) == ["trigger_types"]
    assert "triggered by nothing" in errors["trigger_types"][0]
    html = response.content.decode()
    assert 'value="No trigger"' in html
    # The satisfying type stays ticked.
    assert f'value="{hygiene.pk}" id="id_satisfying_types_0" checked' in html


def test_it_accepts_a_discharge_rule_without_trigger_types_and_drops_any(
    client, admin, north, recall, hygiene
):
    data = form_data(recall, [hygiene], [north], event="discharged", name="After discharge")
    assert post_as(client, admin, data).status_code == 302
    rule = CadenceRule.objects.get(name="After discharge")
    assert rule.event == "discharged"
    assert list(rule.trigger_types.all()) == []
    assert list(rule.satisfying_types.all()) == [hygiene]


def test_it_refuses_a_rule_without_satisfying_types(client, admin, north, recall, hygiene):
    response = post_as(client, admin, form_data(recall, [hygiene], [north], satisfying_types=[]))
    errors = errors_of(response)
    assert list(errors) == ["satisfying_types"]
    assert "at least one appointment type that satisfies" in errors["satisfying_types"][0]
    assert f'value="{hygiene.pk}" id="id_trigger_types_0" checked' in response.content.decode()


def test_it_refuses_a_rule_with_no_location(client, admin, north, recall, hygiene):
    response = post_as(client, admin, form_data(recall, [hygiene], []))
    assert errors_of(response) == {
        "locations": ["Choose at least one location, or tick “All locations”."]
    }


@pytest.mark.parametrize("value", ["0", "-1"])
def test_it_refuses_fewer_than_one_attempt(client, admin, north, recall, hygiene, value):
    response = post_as(client, admin, form_data(recall, [hygiene], [north], max_attempts=value))
    assert list(errors_of(response)) == ["max_attempts"]
    assert "at least 1 attempt" in errors_of(response)["max_attempts"][0]


def test_it_refuses_a_zero_lapse_threshold(client, admin, north, recall, hygiene):
    response = post_as(client, admin, form_data(recall, [hygiene], [north], lapse_after_days="0"))
    assert list(errors_of(response)) == ["lapse_after_days"]


def test_it_refuses_a_duplicate_name(client, admin, north, recall, hygiene, exam):
    rule_at("Hygiene every 6 months", recall, [exam], north)
    response = post_as(client, admin, form_data(recall, [hygiene], [north]))
    assert errors_of(response) == {"name": ["Another rule already has this name."]}


def test_it_refuses_all_locations_to_an_admin_of_some(client, admin, north, south, recall, hygiene):
    data = form_data(recall, [hygiene], [], all_locations="on")
    response = post_as(client, admin, data)
    errors = errors_of(response)
    assert list(errors) == ["all_locations"]
    assert "manages every location" in errors["all_locations"][0]
    assert re.search(
        r'<input type="checkbox" name="all_locations"[^>]* checked>', response.content.decode()
    )


def test_it_lets_an_admin_of_every_location_make_an_all_locations_rule(
    client, admin_everywhere, north, south, recall, hygiene
):
    data = form_data(recall, [hygiene], [north], all_locations="on")
    assert post_as(client, admin_everywhere, data).status_code == 302
    rule = CadenceRule.objects.get()
    assert rule.all_locations
    assert list(rule.locations.all()) == [], "all locations: the list is not kept"


def test_it_offers_only_locations_the_user_manages(client, admin, north, south, recall, hygiene):
    client.force_login(admin)
    form = client.get(CREATE).context["form"]
    assert list(form.fields["locations"].queryset) == [north]
    assert form["all_locations"].value() is False, "an admin of some starts from their own"
    response = client.post(CREATE, form_data(recall, [hygiene], [south]))
    assert errors_of(response) == {"locations": ["Choose only locations you manage."]}


# --- overlapping rules --------------------------------------------------------------


def test_it_refuses_a_rule_overlapping_another_and_names_it(
    client, admin, north, recall, hygiene, exam
):
    rule_at("Six-monthly hygiene", recall, [hygiene, exam], north)
    data = form_data(recall, [hygiene], [north], name="Second hygiene rule")
    response = post_as(client, admin, data)
    errors = errors_of(response)
    assert list(errors) == ["followup_type"]
    message = errors["followup_type"][0]
    assert "“Six-monthly hygiene” already creates Hygiene recall follow-ups" in message
    assert "after a completed Hygiene cleaning at North Clinic" in message
    assert 'value="Second hygiene rule"' in response.content.decode()
    assert CadenceRule.objects.count() == 1


def test_it_refuses_a_rule_overlapping_an_all_locations_rule(client, admin, north, recall, hygiene):
    rule_at("Everywhere", recall, [hygiene])
    response = post_as(client, admin, form_data(recall, [hygiene], [north]))
    assert "“Everywhere”" in errors_of(response)["followup_type"][0]


@pytest.mark.parametrize(
    "difference", ["another trigger", "another location", "another type", "inactive", "event"]
)
def test_it_accepts_rules_that_do_not_overlap(
    client, admin, north, south, recall, hygiene, exam, difference
):
    existing = {
        "another trigger": lambda: rule_at("Exam recall", recall, [exam], north),
        "another location": lambda: rule_at("South hygiene", recall, [hygiene], south),
        "another type": lambda: rule_at("Other", FollowupTypeFactory(), [hygiene], north),
        "inactive": lambda: rule_at("Old", recall, [hygiene], north, is_active=False),
        "event": lambda: rule_at("After discharge", recall, [], north, event="discharged"),
    }
    existing[difference]()
    response = post_as(client, admin, form_data(recall, [hygiene], [north]))
    assert response.status_code == 302, response.context["form"].errors
    assert CadenceRule.objects.filter(name="Hygiene every 6 months").exists()


def test_it_refuses_two_discharge_rules_for_one_type_where_they_meet(
    client, admin, north, recall, hygiene
):
    rule_at("PT re-evaluation", recall, [], north, event="discharged")
    data = form_data(recall, [], [north], event="discharged", satisfying_types=[hygiene.pk])
    message = errors_of(post_as(client, admin, data))["followup_type"][0]
    assert "“PT re-evaluation” already creates Hygiene recall follow-ups after a discharge" in (
        message
    )


def test_it_accepts_an_inactive_rule_that_would_overlap(client, admin, north, recall, hygiene):
    rule_at("Six-monthly hygiene", recall, [hygiene], north)
    data = form_data(recall, [hygiene], [north], name="Draft")
    del data["is_active"]
    assert post_as(client, admin, data).status_code == 302
    assert not CadenceRule.objects.get(name="Draft").is_active


def test_it_does_not_find_a_rule_overlapping_itself(client, admin, north, recall, hygiene):
    rule = rule_at("Six-monthly hygiene", recall, [hygiene], north)
    url = reverse("followups:rule_edit", args=[rule.pk])
    data = form_data(recall, [hygiene], [north], name="Six-monthly hygiene", interval_value="5")
    assert post_as(client, admin, data, url).status_code == 302
    rule.refresh_from_db()
    assert rule.interval_value == 5


def test_it_refuses_an_overlap_in_the_service_too(admin, north, recall, hygiene):
    # Two admins validated their forms at the same moment: the second save must fail.
    rule_at("First", recall, [hygiene], north)
    second = CadenceRule(name="Second", followup_type=recall, all_locations=False)
    with pytest.raises(ValidationError) as caught:
        services.rule_save(
            rule=second,
            trigger_types=[hygiene],
            satisfying_types=[hygiene],
            locations=[north],
            by=admin,
        )
    assert "“First”" in caught.value.message_dict["followup_type"][0]
    assert not CadenceRule.objects.filter(name="Second").exists()


# --- create and edit ----------------------------------------------------------------


def test_it_creates_a_rule_as_an_admin(client, admin, north, recall, hygiene, exam):
    data = form_data(recall, [hygiene], [north], satisfying_types=[hygiene.pk, exam.pk])
    response = post_as(client, admin, data)
    assert response.status_code == 302
    assert response["Location"] == LIST
    rule = CadenceRule.objects.get()
    assert (rule.name, rule.interval_display, rule.followup_type) == (
        "Hygiene every 6 months",
        "6 months",
        recall,
    )
    assert list(rule.trigger_types.all()) == [hygiene]
    assert set(rule.satisfying_types.all()) == {hygiene, exam}
    assert list(rule.locations.all()) == [north]
    assert (rule.outreach_plan, rule.max_attempts, rule.lapse_after_days) == (
        "Standard recall",
        3,
        180,
    )
    assert "Rule “Hygiene every 6 months” added." in client.get(LIST).content.decode()


def test_it_edits_a_rule_as_an_admin(client, admin, north, recall, hygiene, exam):
    rule = rule_at("Six-monthly hygiene", recall, [hygiene], north)
    url = reverse("followups:rule_edit", args=[rule.pk])
    client.force_login(admin)
    form = client.get(url).context["form"]
    assert form["name"].value() == "Six-monthly hygiene"
    data = form_data(recall, [exam], [north], name="Exam recall", interval_value="12")
    assert client.post(url, data).status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.interval_value) == ("Exam recall", 12)
    assert list(rule.trigger_types.all()) == [exam]


def test_it_keeps_a_closed_location_of_a_rule_it_edits(client, admin, north, recall, hygiene):
    closed = LocationFactory(name="Closed Clinic", is_active=False)
    rule = rule_at("Six-monthly hygiene", recall, [hygiene], north, closed)
    url = reverse("followups:rule_edit", args=[rule.pk])
    data = form_data(recall, [hygiene], [north], name="Renamed")
    assert post_as(client, admin, data, url).status_code == 302
    assert set(rule.locations.all()) == {north, closed}


# --- who may read and change rules ----------------------------------------------------


def test_it_lets_a_manager_read_the_rules_of_their_locations(
    client, manager, north, south, recall, hygiene, exam
):
    rule_at("North hygiene", recall, [hygiene], north)
    rule_at("South hygiene", recall, [hygiene], south)
    rule_at("Exams everywhere", recall, [exam])
    client.force_login(manager)
    response = client.get(LIST)
    assert response.status_code == 200
    names = [r.name for r in response.context["page"].object_list]
    assert names == ["Exams everywhere", "North hygiene"]
    html = response.content.decode()
    assert "South hygiene" not in html
    assert CREATE not in html, "no Add button for readers"
    assert "/edit/" not in html, "no Edit links for readers"


def test_it_refuses_a_manager_creating_or_editing_rules(client, manager, north, recall, hygiene):
    rule = rule_at("North hygiene", recall, [hygiene], north)
    url = reverse("followups:rule_edit", args=[rule.pk])
    client.force_login(manager)
    assert client.get(CREATE).status_code == 404
    assert client.get(url).status_code == 404
    assert client.post(CREATE, form_data(recall, [hygiene], [north], name="New")).status_code == 404
    assert client.post(url, form_data(recall, [hygiene], [north], name="X")).status_code == 404
    rule.refresh_from_db()
    assert rule.name == "North hygiene"
    assert not CadenceRule.objects.filter(name="New").exists()


@pytest.mark.parametrize("who", ["front_desk", "care_staff", "no_grant"])
def test_it_hides_rules_from_everyone_else(client, request, who, north, recall, hygiene):
    rule = rule_at("North hygiene", recall, [hygiene], north)
    client.force_login(request.getfixturevalue(who))
    assert client.get(LIST).status_code == 404
    assert client.get(CREATE).status_code == 404
    assert client.get(reverse("followups:rule_edit", args=[rule.pk])).status_code == 404


def test_it_answers_404_for_a_rule_of_another_location(client, admin, south, recall, hygiene):
    rule = rule_at("South hygiene", recall, [hygiene], south)
    url = reverse("followups:rule_edit", args=[rule.pk])
    client.force_login(admin)
    assert client.get(url).status_code == 404
    assert client.post(url, form_data(recall, [hygiene], [south], name="Mine")).status_code == 404
    rule.refresh_from_db()
    assert rule.name == "South hygiene"
    assert "South hygiene" not in client.get(LIST).content.decode()


def test_it_needs_every_location_of_a_rule_to_edit_it(
    client, admin, admin_everywhere, north, south, recall, hygiene, exam
):
    shared = rule_at("Both clinics", recall, [hygiene], north, south)
    everywhere = rule_at("Everywhere", recall, [exam])
    client.force_login(admin)
    listing = client.get(LIST)
    assert {r.name: r.editable for r in listing.context["page"].object_list} == {
        "Both clinics": False,
        "Everywhere": False,
    }
    for rule in (shared, everywhere):
        assert client.get(reverse("followups:rule_edit", args=[rule.pk])).status_code == 404
    client.force_login(admin_everywhere)
    for rule in (shared, everywhere):
        assert client.get(reverse("followups:rule_edit", args=[rule.pk])).status_code == 200


def test_it_shows_an_empty_state(client, admin, manager):
    client.force_login(admin)
    html = client.get(LIST).content.decode()
    assert "No cadence rules yet" in html
    assert "Add the first rule" in html
    client.force_login(manager)
    html = client.get(LIST).content.decode()
    assert "An admin of your practice sets up the rules" in html


def test_it_lists_rules_in_a_fixed_number_of_queries(client, admin, north, recall):
    def count() -> int:
        client.get(LIST)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(LIST).status_code == 200
        return len(queries)

    client.force_login(admin)
    types = [AppointmentTypeFactory() for _ in range(3)]
    rule_at("Rule 0", FollowupTypeFactory(), types, north)
    few = count()
    for i in range(1, 12):
        rule_at(f"Rule {i}", FollowupTypeFactory(), types, north)
    assert count() == few


# --- the navigation link ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "shown"),
    [("admin", True), ("manager", True), ("front_desk", False), ("care_staff", False)],
)
def test_it_links_the_rules_page_for_those_who_may_read_it(client, request, who, shown):
    client.force_login(request.getfixturevalue(who))
    html = client.get(reverse("patients:list")).content.decode()
    assert (f'href="{LIST}"' in html) is shown


def test_it_asks_the_database_once_for_the_navigation(rf, manager):
    from django.template import engines

    request = rf.get("/")
    request.user = manager
    template = engines["django"].from_string("{{ nav.can_read_rules }}{{ nav.can_read_rules }}")
    with CaptureQueriesContext(connection) as queries:
        assert template.render({}, request) == "TrueTrue"
        assert template.render({}, request) == "TrueTrue"
    assert len(queries) == 1


# --- audit ----------------------------------------------------------------------------


def entries_for(rule):
    return LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(CadenceRule), object_pk=str(rule.pk)
    ).order_by("pk")


def test_it_records_who_created_a_rule_and_its_lists(client, admin, north, recall, hygiene):
    post_as(client, admin, form_data(recall, [hygiene], [north]))
    rule = CadenceRule.objects.get()
    entries = list(entries_for(rule))
    assert entries[0].action == LogEntry.Action.CREATE
    assert all(e.actor == admin for e in entries)
    m2m = {field for e in entries[1:] for field in e.changes_dict}
    assert m2m == {"trigger_types", "satisfying_types", "locations"}


def test_it_records_list_changes_of_an_edited_rule(client, admin, north, recall, hygiene, exam):
    rule = rule_at("Six-monthly hygiene", recall, [hygiene], north)
    before = entries_for(rule).count()
    url = reverse("followups:rule_edit", args=[rule.pk])
    data = form_data(recall, [exam], [north], name="Six-monthly hygiene")
    post_as(client, admin, data, url)
    changes = [e.changes_dict for e in entries_for(rule)[before:]]
    trigger_changes = [c["trigger_types"] for c in changes if "trigger_types" in c]
    assert {"type": "m2m", "operation": "delete", "objects": ["Hygiene cleaning"]} in (
        trigger_changes
    )
    assert {"type": "m2m", "operation": "add", "objects": ["Periodic exam"]} in trigger_changes


# --- Django admin -----------------------------------------------------------------------


def test_it_lists_types_and_rules_in_the_django_admin(client, north, recall, hygiene):
    rule = rule_at("North hygiene", recall, [hygiene], north)
    root = staff(Role.ADMIN, north, username="root", is_staff=True, is_superuser=True)
    client.force_login(root)
    assert client.get(reverse("admin:followups_followuptype_changelist")).status_code == 200
    assert client.get(reverse("admin:followups_followuptype_add")).status_code == 200
    listing = client.get(reverse("admin:followups_cadencerule_changelist"))
    assert listing.status_code == 200
    assert reverse("followups:rule_edit", args=[rule.pk]) in listing.content.decode()
    assert client.get(reverse("admin:followups_cadencerule_add")).status_code == 403
    page = client.get(reverse("admin:followups_cadencerule_change", args=[rule.pk]))
    assert page.status_code == 200 and 'name="name"' not in page.content.decode()
