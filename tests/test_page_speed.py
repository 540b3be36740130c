"""What the page-speed work (issue #7, benchmarks/pages.py) must not change.

Lists read the user's locations once per request as literal ids, take their
length from counts the page already made, and cost the same number of queries
whatever the number of locations or rows.
"""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from followups.models import Followup
from locations.models import Role
from patients import selectors
from patients.models import Patient
from tests.factories import (
    FollowupFactory,
    FollowupTypeFactory,
    GrantFactory,
    LocationFactory,
    OutboundMessageFactory,
    PatientFactory,
    staff,
)

pytestmark = pytest.mark.django_db


def queries(client, url: str, **params) -> int:
    client.get(url, params)  # warm: session start, content types
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url, params).status_code == 200
    return len(captured)


def test_the_patient_list_costs_the_same_queries_for_1_or_20_locations_or_an_admin(client, north):
    others = [LocationFactory() for _ in range(19)]
    for location in [north, *others]:
        PatientFactory.create_batch(2, home_location=location)
    one = staff(Role.FRONT_DESK, north, username="one")
    twenty = staff(Role.PRACTICE_MANAGER, north, *others, username="twenty")
    admin = staff(Role.ADMIN, north, *others, username="admin")
    counts = {}
    for user in (one, twenty, admin):
        client.force_login(user)
        counts[user.username] = queries(client, reverse("patients:list"))
        assert len(client.get(reverse("patients:list")).context["page"].object_list) == (
            2 if user is one else 25
        )
    assert counts["one"] == counts["twenty"] == counts["admin"]


def test_the_location_ids_are_read_once_per_user_object(front_desk, north, south):
    with CaptureQueriesContext(connection) as captured:
        assert selectors.location_ids_for(user=front_desk) == [north.pk]
        assert selectors.location_ids_for(user=front_desk) == [north.pk]
    assert len(captured) == 1


def test_a_new_grant_shows_on_the_next_request(client, front_desk, north, south):
    at_south = PatientFactory(home_location=south)
    client.force_login(front_desk)
    assert at_south not in client.get(reverse("patients:list")).context["page"].object_list
    GrantFactory(user=front_desk, location=south, role=Role.FRONT_DESK)
    assert at_south in client.get(reverse("patients:list")).context["page"].object_list


def test_a_merged_record_stays_out_of_the_list_but_its_old_address_leads_on(
    client, front_desk, north
):
    survivor = PatientFactory(home_location=north)
    merged = PatientFactory(home_location=north, merged_into=survivor)
    client.force_login(front_desk)
    listed = client.get(reverse("patients:list")).context["page"].object_list
    assert survivor in listed and merged not in listed
    response = client.get(reverse("patients:detail", args=[merged.pk]))
    assert response.status_code == 302 and response.url == survivor.get_absolute_url()


def _due(patient, days_overdue: int, **kwargs) -> Followup:
    due = timezone.localdate() - dt.timedelta(days=days_overdue)
    return FollowupFactory(
        patient=patient,
        followup_type=FollowupTypeFactory(),
        due_date=due,
        lapses_on=due + dt.timedelta(days=180),
        **kwargs,
    )


def test_today_pages_by_the_bucket_counts_it_shows(client, front_desk, north):
    for i in range(30):
        _due(PatientFactory(home_location=north), 1 + i)  # due, then overdue
    _due(PatientFactory(home_location=north), -3)  # upcoming
    _due(PatientFactory(home_location=north), 200, status=Followup.Status.LAPSED)
    client.force_login(front_desk)
    response = client.get(reverse("followups:today"))
    counts, page = response.context["counts"], response.context["page"]
    assert page.paginator.count == counts["overdue"] + counts["due"] == 30
    assert len(response.context["rows"]) == 25
    second = client.get(reverse("followups:today"), {"page": 2})
    assert len(second.context["rows"]) == 5
    for bucket, n in (("upcoming", 1), ("lapsed", 1)):
        response = client.get(reverse("followups:today"), {"bucket": bucket})
        assert response.context["page"].paginator.count == response.context["counts"][bucket]
        assert len(response.context["rows"]) == n


def test_the_messages_page_pages_by_its_tab_counts(client, front_desk, north):
    now = timezone.now()
    for i in range(27):
        OutboundMessageFactory(
            patient=PatientFactory(home_location=north),
            scheduled_for=now - dt.timedelta(minutes=i),
        )
    OutboundMessageFactory(
        patient=PatientFactory(home_location=north),
        status="failed",
        scheduled_for=now - dt.timedelta(days=1),
    )
    client.force_login(front_desk)
    for tab, total in (("queue", 27), ("attention", 1), ("all", 28)):
        response = client.get(reverse("reminders:messages"), {"tab": tab})
        page = response.context["page"]
        assert page.paginator.count == response.context["counts"][tab] == total
        assert len(page.object_list) == min(total, 25)


def _join_settings() -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')"
        )
        return cursor.fetchone()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL planner setting")
def test_counts_planned_with_nested_loops_only_are_the_same_and_leave_the_settings_as_they_were():
    from practicecrm.pagination import count_each

    north = LocationFactory()
    PatientFactory.create_batch(3, home_location=north)
    PatientFactory.create_batch(2)
    querysets = [
        Patient.objects.filter(home_location=north),
        Patient.objects.exclude(home_location=north),
        Patient.objects.filter(pk__in=[]),
    ]
    assert count_each(querysets, limit=2, nested_loops=True) == [3, 2, 0]
    assert count_each(querysets, limit=2) == [3, 2, 0]
    assert _join_settings() == ("on", "on")  # the settings do not outlive the count
    planned_without = Patient.objects.extra(
        where=[
            "current_setting('enable_hashjoin') = 'off'",
            "current_setting('enable_mergejoin') = 'off'",
        ]
    )
    assert count_each([planned_without], nested_loops=True) == [5]
    assert count_each([planned_without]) == [0]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL planner setting")
def test_a_count_that_fails_leaves_hash_and_merge_joins_on(transactional_db):
    from django.db import DatabaseError, transaction

    from practicecrm.pagination import count_each

    failing = Patient.objects.extra(where=["1 / (SELECT count(*) FROM patients_patient) = 1"])
    with pytest.raises(DatabaseError, match="division by zero"):
        count_each([failing], nested_loops=True)
    assert _join_settings() == ("on", "on")
    with pytest.raises(DatabaseError, match="division by zero"), transaction.atomic():
        count_each([failing], nested_loops=True)
    assert _join_settings() == ("on", "on")  # the rollback took the SETs with it
