"""The Today worklist: who is in it, in which bucket, in what order, in how many queries."""

import datetime as dt

import pytest
from django.db import connection
from django.http import Http404
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from followups import selectors
from followups.models import Followup
from followups.selectors import WorklistFilters, worklist, worklist_counts
from locations.models import Role
from patients.models import Appointment, Patient
from tests.factories import (
    AppointmentFactory,
    AppointmentTypeFactory,
    CadenceRuleFactory,
    ChannelConsentFactory,
    ContactAttemptFactory,
    FollowupFactory,
    FollowupTypeFactory,
    PatientFactory,
    ProviderFactory,
    UserFactory,
    staff,
)

pytestmark = pytest.mark.django_db

Status = Followup.Status
ALL = WorklistFilters()


@pytest.fixture
def today():
    return timezone.localdate()


@pytest.fixture
def hygiene(db):
    return AppointmentTypeFactory(name="Hygiene cleaning", code="hygiene-cleaning")


@pytest.fixture
def rule(hygiene):
    return CadenceRuleFactory(
        followup_type=FollowupTypeFactory(name="Hygiene recall", code="hygiene-recall", value=80),
        trigger_types=[hygiene],
        satisfying_types=[hygiene],
    )


@pytest.fixture
def due(north, rule, today):
    """A follow-up at North due `days_ago` days ago, for a new reachable patient."""

    def make(days_ago=0, *, patient=None, followup_type=None, **kwargs) -> Followup:
        due_date = today - dt.timedelta(days=days_ago)
        return FollowupFactory(
            patient=patient or PatientFactory(home_location=north),
            followup_type=followup_type or rule.followup_type,
            rule=rule,
            due_date=due_date,
            lapses_on=kwargs.pop("lapses_on", due_date + dt.timedelta(days=180)),
            **kwargs,
        )

    return make


def rows(user, bucket="", today=None, **filters) -> list[Followup]:
    chosen = WorklistFilters(bucket=bucket, **filters)
    return list(worklist(user=user, filters=chosen, today=today or timezone.localdate()))


def test_it_orders_overdue_before_due_oldest_first_then_by_value(front_desk, due):
    low = FollowupTypeFactory(value=20)
    high = FollowupTypeFactory(value=90)
    due_today = due(0)
    due_last_week = due(7)
    overdue_low = due(60, followup_type=low)
    overdue_high = due(60, followup_type=high)
    overdue_most = due(90)
    overdue_a_little = due(31)

    assert rows(front_desk) == [
        overdue_most,
        overdue_high,
        overdue_low,
        overdue_a_little,
        due_last_week,
        due_today,
    ]


def test_its_buckets_follow_the_settings_boundaries(front_desk, due, today, settings):
    settings.FOLLOWUP_UPCOMING_DAYS = 7
    settings.FOLLOWUP_DUE_WINDOW_DAYS = 10
    made = {
        "later": due(-8),
        "upcoming, last day": due(-7),
        "upcoming, tomorrow": due(-1),
        "due today": due(0),
        "due, last day": due(10),
        "overdue": due(11),
        "lapses today": due(40, lapses_on=today),
        "lapses tomorrow": due(40, lapses_on=today + dt.timedelta(days=1)),
        "lapsed": due(5, status=Status.LAPSED),
    }
    bucket_of = {
        f.pk: f.bucket for f in Followup.objects.annotate(bucket=selectors.bucket_expression(today))
    }
    assert {key: bucket_of[f.pk] for key, f in made.items()} == {
        "later": "later",
        "upcoming, last day": "upcoming",
        "upcoming, tomorrow": "upcoming",
        "due today": "due",
        "due, last day": "due",
        "overdue": "overdue",
        "lapses today": "lapsed",
        "lapses tomorrow": "overdue",
        "lapsed": "lapsed",
    }
    assert rows(front_desk, "upcoming") == [made["upcoming, tomorrow"], made["upcoming, last day"]]
    assert rows(front_desk, "due") == [made["due, last day"], made["due today"]]
    assert set(rows(front_desk, "overdue")) == {made["overdue"], made["lapses tomorrow"]}
    assert set(rows(front_desk, "lapsed")) == {made["lapses today"], made["lapsed"]}
    # Today's list: overdue and due only.
    assert set(rows(front_desk)) == {
        made[k] for k in ("overdue", "lapses tomorrow", "due, last day", "due today")
    }
    assert worklist_counts(user=front_desk, filters=ALL, today=today) == {
        "overdue": 2,
        "due": 2,
        "upcoming": 2,
        "lapsed": 2,
    }


def test_each_buckets_plain_ranges_say_what_the_bucket_expression_says(due, today, settings):
    """bucket_q (what lists filter and count on, by index) and bucket_expression (what
    a row shows) must agree on every status × due date × lapse date around the edges."""
    settings.FOLLOWUP_UPCOMING_DAYS = 7
    settings.FOLLOWUP_DUE_WINDOW_DAYS = 10
    for status in selectors.WORKLIST_STATUSES:
        for days_ago in (-9, -8, -7, -1, 0, 1, 10, 11, 40):
            for lapse_in in (-1, 0, 1, 30):
                due(days_ago, status=status, lapses_on=today + dt.timedelta(days=lapse_in))
    shown = Followup.objects.annotate(bucket=selectors.bucket_expression(today))
    for bucket in selectors.BUCKETS:
        expected = {f.pk for f in shown if f.bucket == bucket}
        assert expected, bucket
        assert (
            set(
                Followup.objects.filter(selectors.bucket_q(bucket, today)).values_list(
                    "pk", flat=True
                )
            )
            == expected
        ), bucket


def test_tab_counts_are_exact_up_to_the_cap_then_say_more(front_desk, due, today, south):
    for days_ago in (40, 50, 60, 3):
        due(days_ago)
    due(-3)

    exact = worklist_counts(user=front_desk, filters=ALL, today=today)
    assert exact == {"overdue": 3, "due": 1, "upcoming": 1, "lapsed": 0}
    roomy = selectors.worklist_tab_counts(user=front_desk, filters=ALL, today=today, cap=10)
    assert (roomy.counts, roomy.more) == (exact, frozenset())
    assert roomy.label("overdue", "due") == "4"

    tight = selectors.worklist_tab_counts(user=front_desk, filters=ALL, today=today, cap=2)
    assert tight.counts == {"overdue": 2, "due": 1, "upcoming": 1, "lapsed": 0}
    assert tight.more == {"overdue"}
    elsewhere = WorklistFilters(location=south)  # not one of the front desk's
    none = selectors.worklist_tab_counts(user=front_desk, filters=elsewhere, today=today, cap=2)
    assert (none.counts, none.more) == (dict.fromkeys(selectors.BUCKETS, 0), frozenset())
    assert (tight.label("overdue"), tight.label("due"), tight.label("overdue", "due")) == (
        "2+",
        "1",
        "3+",
    )


def test_it_leaves_out_patients_nobody_may_contact(front_desk, due, north):
    reachable = due(5)
    for status in (Patient.Status.DECEASED, Patient.Status.INACTIVE, Patient.Status.MOVED):
        due(5, patient=PatientFactory(home_location=north, status=status))
    due(5, patient=PatientFactory(home_location=north, do_not_contact=True))
    due(5, patient=PatientFactory(home_location=north, preferred_channel="none"))
    assert rows(front_desk) == [reachable]
    assert worklist_counts(user=front_desk, filters=ALL, today=timezone.localdate())["due"] == 1


def test_it_leaves_out_snoozed_scheduled_and_closed_followups(front_desk, due, today):
    shown = [
        due(5),
        due(6, snoozed_until=today),  # wakes up today
        due(7, status=Status.CONTACTED),
    ]
    due(5, snoozed_until=today + dt.timedelta(days=1))
    due(5, status=Status.SCHEDULED)
    for closed in (Status.DONE, Status.DISMISSED):
        due(5, status=closed)
    assert set(rows(front_desk)) == set(shown)


def test_it_leaves_out_patients_with_a_satisfying_visit_booked(front_desk, due, hygiene):
    booked, other_type, past, cancelled = (due(5) for _ in range(4))
    soon = timezone.now() + dt.timedelta(days=3)
    # Written straight to the table, as a bulk import might: the selector must not
    # rely on the follow-up's status having been updated.
    AppointmentFactory(patient=booked.patient, appointment_type=hygiene, start=soon)
    AppointmentFactory(patient=other_type.patient, start=soon)
    AppointmentFactory(
        patient=past.patient, appointment_type=hygiene, start=timezone.now() - dt.timedelta(hours=2)
    )
    AppointmentFactory(
        patient=cancelled.patient,
        appointment_type=hygiene,
        start=soon,
        status=Appointment.Status.CANCELLED,
    )
    assert set(rows(front_desk)) == {other_type, past, cancelled}


def test_it_shows_only_the_users_locations(front_desk, due, north, south, rule):
    mine = due(5)
    FollowupFactory(
        patient=PatientFactory(home_location=south),
        followup_type=rule.followup_type,
        due_date=mine.due_date,
    )
    # A North patient shared with South, followed up at South: South's list, not North's.
    shared = PatientFactory(home_location=north)
    shared.shared_with.add(south)
    FollowupFactory(patient=shared, location=south, due_date=mine.due_date)
    assert rows(front_desk) == [mine]
    both = staff(Role.FRONT_DESK, north, south)
    assert len(rows(both)) == 3
    assert len(rows(both, location=south)) == 2
    assert rows(UserFactory()) == []  # no grant, nothing


def test_it_filters_by_type_provider_and_assignee(front_desk, due, north):
    provider = ProviderFactory(locations=[north])
    other_type = FollowupTypeFactory()
    by_type = due(5, followup_type=other_type)
    by_provider = due(6, source_appointment=AppointmentFactory(provider=provider))
    assigned = due(7, assigned_to=front_desk)
    assert rows(front_desk, followup_type_id=other_type.pk) == [by_type]
    assert rows(front_desk, provider_id=provider.pk) == [by_provider]
    assert rows(front_desk, assigned_to_id=front_desk.pk) == [assigned]
    counts = worklist_counts(
        user=front_desk,
        filters=WorklistFilters(assigned_to_id=front_desk.pk),
        today=timezone.localdate(),
    )
    assert counts == {"overdue": 0, "due": 1, "upcoming": 0, "lapsed": 0}


def test_each_row_carries_its_last_attempt(front_desk, due):
    followup = due(5, status=Status.CONTACTED)
    now = timezone.now()
    ContactAttemptFactory(followup=followup, attempted_at=now - dt.timedelta(days=2))
    ContactAttemptFactory(
        followup=followup, channel="sms", outcome="left_message", attempted_at=now
    )
    [row] = rows(front_desk)
    assert (row.attempt_count, row.last_attempt_channel, row.last_attempt_outcome) == (
        2,
        "sms",
        "left_message",
    )
    assert row.last_attempt_at == now


def _page(user, size: int) -> tuple[int, list[Followup]]:
    """Queries to build and show one page of rows, consents included."""
    with CaptureQueriesContext(connection) as captured:
        page = rows(user)[:size]
        for row in page:
            # What a row shows: patient, type, assignee, consents. (The page sets each
            # row's location from the user's locations; only the export shows the
            # provider, and it joins it.)
            str(row.patient), str(row.followup_type), row.assigned_to
            [consent.status for consent in row.patient.consents.all()]
    return len(captured), page


def test_its_query_count_does_not_grow_with_rows(front_desk, due, north):
    provider = ProviderFactory(locations=[north])
    clerk = UserFactory()

    def add(n):
        for i in range(n):
            followup = due(
                5 + i % 50,
                assigned_to=clerk if i % 3 else None,
                source_appointment=AppointmentFactory(provider=provider) if i % 4 else None,
            )
            ChannelConsentFactory(patient=followup.patient)
            ChannelConsentFactory(patient=followup.patient, channel="email")
            ContactAttemptFactory(followup=followup)

    add(10)
    # guardian looks the permission's content type up once per process, then caches it.
    _page(front_desk, 10)
    small, page = _page(front_desk, 10)
    assert len(page) == 10
    add(190)
    large, page = _page(front_desk, 200)
    assert len(page) == 200
    # The rows with everything joined, then the consents, then the recall messages.
    assert small == large == 3


def test_a_row_and_a_followup_of_another_location_are_not_found(front_desk, due, south):
    mine = due(5)
    theirs = FollowupFactory(patient=PatientFactory(home_location=south))
    today = timezone.localdate()
    assert selectors.worklist_row(user=front_desk, pk=mine.pk, today=today).bucket == "due"
    assert selectors.followup_get(user=front_desk, pk=mine.pk) == mine
    with pytest.raises(Http404):
        selectors.worklist_row(user=front_desk, pk=theirs.pk, today=today)
    with pytest.raises(Http404):
        selectors.followup_get(user=front_desk, pk=theirs.pk)


def test_the_patient_page_lists_active_followups_first(north_patient, due, rule):
    old = due(400, patient=north_patient, status=Status.DONE)
    current = due(5, patient=north_patient)
    ContactAttemptFactory(followup=current)
    listed = selectors.patient_followups(patient=north_patient, today=timezone.localdate())
    assert listed == [current, old]
    assert len(listed[0].attempts.all()) == 1
