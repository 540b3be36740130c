"""Reads for follow-up pages, narrowed to what the user may see (via patients.selectors)."""

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import (
    Case,
    Count,
    Exists,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Now
from django.http import Http404

from followups.models import ACTIVE_STATUSES, CadenceRule, ContactAttempt, Followup, FollowupType
from locations.access import (
    CHANGE_PATIENTS,
    MANAGE_LOCATION,
    ROLE_PERMISSIONS,
    VIEW_PATIENTS,
    VIEW_REPORTS,
    holds_anywhere,
    locations_for,
)
from locations.models import Location
from patients.models import Appointment, ChannelConsent, Patient, Provider
from patients.selectors import location_ids_for, patients_visible_to, visible_patient_q
from practicecrm.pagination import count_each
from reminders.selectors import recall_messages_prefetch

BUCKETS = ("overdue", "due", "upcoming", "lapsed")
BUCKET_LABELS = {
    "overdue": "Overdue",
    "due": "Due",
    "upcoming": "Upcoming",
    "lapsed": "Lapsed",
    "later": "Later",
    "scheduled": "Scheduled",
}
WORKLIST_STATUSES = (Followup.Status.OPEN, Followup.Status.CONTACTED, Followup.Status.LAPSED)


def bucket_expression(today: dt.date) -> Case:
    """The bucket of a follow-up on `today`, in SQL so lists can filter and count by it."""
    window = dt.timedelta(days=settings.FOLLOWUP_DUE_WINDOW_DAYS)
    upcoming = dt.timedelta(days=settings.FOLLOWUP_UPCOMING_DAYS)
    return Case(
        When(status=Followup.Status.SCHEDULED, then=Value("scheduled")),
        When(Q(status=Followup.Status.LAPSED) | Q(lapses_on__lte=today), then=Value("lapsed")),
        When(due_date__lt=today - window, then=Value("overdue")),
        When(due_date__lte=today, then=Value("due")),
        When(due_date__lte=today + upcoming, then=Value("upcoming")),
        default=Value("later"),
    )


def _live(today: dt.date) -> Q:
    """Open or contacted and not yet past "lapsed after": overdue, due, upcoming or later."""
    return Q(status__in=[Followup.Status.OPEN, Followup.Status.CONTACTED], lapses_on__gt=today)


def bucket_q(bucket: str, today: dt.date) -> Q:
    """The rows of one bucket, in plain columns, for rows already narrowed to
    WORKLIST_STATUSES — what bucket_expression says, as ranges the partial indexes
    followup_worklist_idx and followup_active_idx serve (a CASE no index can)."""
    window = dt.timedelta(days=settings.FOLLOWUP_DUE_WINDOW_DAYS)
    if bucket == "lapsed":
        # Marked lapsed, or open and past "lapsed after" (before the nightly job):
        # followup_lapsed_idx and followup_lapsing_idx.
        return Q(status=Followup.Status.LAPSED) | Q(
            status__in=[Followup.Status.OPEN, Followup.Status.CONTACTED], lapses_on__lte=today
        )
    if bucket == "overdue":
        return _live(today) & Q(due_date__lt=today - window)
    if bucket == "due":
        return _live(today) & Q(due_date__gte=today - window, due_date__lte=today)
    if bucket == "upcoming":
        upcoming = dt.timedelta(days=settings.FOLLOWUP_UPCOMING_DAYS)
        return _live(today) & Q(due_date__gt=today, due_date__lte=today + upcoming)
    raise ValueError(f"no bucket {bucket!r}")


def _satisfying_booking_exists() -> Exists:
    """A booked future visit of a type that satisfies the follow-up's rule.

    Joined through the rule's satisfying types rather than nested in an IN, so both
    correlations are plain equalities (patient, rule): PostgreSQL can then hash the
    practice's few future bookings once (a hash anti-join) instead of probing them
    follow-up by follow-up (appointment_booked_idx serves either way).
    """
    return Exists(
        Appointment.objects.filter(
            patient_id=OuterRef("patient_id"),
            status__in=[Appointment.Status.SCHEDULED, Appointment.Status.CONFIRMED],
            start__gt=Now(),
            appointment_type__satisfying_rules=OuterRef("rule_id"),
        )
    )


def followups_visible_to(user, perm: str = VIEW_PATIENTS) -> QuerySet[Followup]:
    """Follow-ups of patients the user may see (with `perm`)."""
    return Followup.objects.filter(patient__in=patients_visible_to(user, perm).values("pk"))


def followup_get(*, user, pk: int, perm: str = CHANGE_PATIENTS) -> Followup:
    """A follow-up the user may act on, else 404 (another location's is not found)."""
    followup = (
        followups_visible_to(user, perm)
        .select_related("patient", "followup_type", "rule", "location")
        .filter(pk=pk)
        .first()
    )
    if followup is None:
        raise Http404("No such follow-up.")
    return followup


def assignable_staff(*, location: Location) -> QuerySet:
    """Active staff who can work follow-ups at `location` (a role that edits patients)."""
    roles = [role for role, perms in ROLE_PERMISSIONS.items() if CHANGE_PATIENTS in perms]
    return (
        get_user_model()
        .objects.filter(
            is_active=True, location_grants__location=location, location_grants__role__in=roles
        )
        .distinct()
        .order_by("first_name", "last_name", "username")
    )


def _with_row_data(qs: QuerySet[Followup]) -> QuerySet[Followup]:
    """What a worklist row shows, in a fixed number of queries per page.

    The follow-up's location is not joined: the page has the user's locations in
    hand and sets them on its rows and their recall messages (with_locations; the
    export and the one-row re-read join it).
    Each relation joined here is one more that PostgreSQL's planner orders on every
    request: with the location and the source visit's provider joined too, planning
    the page's list took 4–6 ms of its 7–10 ms at 1× (benchmarks/pages.py).
    """
    latest = ContactAttempt.objects.filter(followup=OuterRef("pk")).order_by("-attempted_at", "-id")
    return (
        qs.select_related("patient", "followup_type", "assigned_to")
        .annotate(
            last_attempt_at=Subquery(latest.values("attempted_at")[:1]),
            last_attempt_outcome=Subquery(latest.values("outcome")[:1]),
            last_attempt_channel=Subquery(latest.values("channel")[:1]),
            attempt_count=Subquery(
                ContactAttempt.objects.filter(followup=OuterRef("pk"))
                .values("followup")
                .annotate(n=Count("pk"))
                .values("n")[:1]
            ),
        )
        .prefetch_related(
            Prefetch("patient__consents", queryset=ChannelConsent.objects.all()),
            # Recall outreach of the whole page in one query: last step, next step.
            recall_messages_prefetch(),
        )
    )


def with_locations(followups: list[Followup], locations: Iterable[Location]) -> list[Followup]:
    """Set each row's location, and its recall messages', from locations already read.

    The list joins neither: each relation joined is one more that PostgreSQL's
    planner orders on every request, and a page's recall messages would carry a
    copy of the same few locations each. A message from a location not given
    here reads its own when asked.
    """
    by_id = {loc.pk: loc for loc in locations}
    for followup in followups:
        followup.location = by_id[followup.location_id]
        for message in getattr(followup, "recall_messages", ()):
            if message.location_id in by_id:
                message.location = by_id[message.location_id]
    return followups


@dataclass(frozen=True)
class WorklistFilters:
    location: Location | None = None
    bucket: str = ""  # "" = due and overdue: who to contact today
    followup_type_id: int | None = None
    provider_id: int | None = None
    assigned_to_id: int | None = None


def worklist(*, user, filters: WorklistFilters, today: dt.date) -> QuerySet[Followup]:
    """Who to contact: reachable patients' follow-ups at the user's locations, by priority.

    Most urgent first: the list holds one bucket, or overdue and due together, and
    overdue is the older due dates, so the due date orders it; then the type's value.
    """
    qs = _worklist_base(user=user, filters=filters, today=today)
    if filters.bucket in BUCKETS:
        qs = qs.filter(bucket_q(filters.bucket, today))
    else:
        qs = qs.filter(_live(today), due_date__lte=today)
    return _with_row_data(qs).order_by("due_date", "-followup_type__value", "id")


def worklist_filter_choices(*, location_ids: list[int]) -> dict[str, list[tuple[int, str]]]:
    """Options of the worklist's filters, as (id, label): types, and providers and staff
    of these locations.

    Plain pairs, not model instances: a manager of 20 locations picks among ~200
    staff and ~100 providers, and building and rendering a model per option was a
    tenth of the page's CPU time (benchmarks/pages.py).
    """
    providers = (
        Provider.objects.filter(is_active=True, locations__in=location_ids)
        .distinct()
        .order_by("name", "pk")
        .values_list("pk", "name", "title")
    )
    staff = (
        get_user_model()
        .objects.filter(is_active=True, location_grants__location__in=location_ids)
        .distinct()
        .order_by("first_name", "last_name", "pk")
        .values_list("pk", "first_name", "last_name", "username")
    )
    return {
        "followup_types": list(
            FollowupType.objects.filter(is_active=True).values_list("pk", "name")
        ),
        # As Provider.__str__ and User.get_full_name word them.
        "providers": [(pk, f"{name}, {title}" if title else name) for pk, name, title in providers],
        "staff": [
            (pk, f"{first} {last}".strip() or username) for pk, first, last, username in staff
        ],
    }


def worklist_counts(*, user, filters: WorklistFilters, today: dt.date) -> dict[str, int]:
    """How many follow-ups each bucket holds under the same filters (one query)."""
    any_bucket = Q()
    for b in BUCKETS:
        any_bucket |= bucket_q(b, today)
    qs = _worklist_base(user=user, filters=filters, today=today).filter(any_bucket)
    counts = qs.aggregate(**{b: Count("pk", filter=bucket_q(b, today)) for b in BUCKETS})
    return {b: counts[b] or 0 for b in BUCKETS}


@dataclass(frozen=True)
class TabCounts:
    """Each bucket's count, exact up to a cap; `more` holds the buckets past it."""

    counts: dict[str, int]
    more: frozenset[str]

    def label(self, *buckets: str) -> str:
        """The count of these buckets, with "+" when one holds more than the cap."""
        total = sum(self.counts[b] for b in buckets)
        return f"{total:,}+" if self.more.intersection(buckets) else f"{total:,}"


def worklist_tab_counts(*, user, filters: WorklistFilters, today: dt.date, cap: int) -> TabCounts:
    """The Today tabs' counts, each read no further than `cap` + 1 rows (one query).

    An exact count must visit every active follow-up of the user's locations, with
    its patient and its bookings: 40,000 rows for a manager of 20 locations. Nobody
    pages through more than a thousand follow-ups — they narrow the list, or export
    it (the export is never capped) — so past the cap the tab says "1,000+" and
    each bucket's read stops there, by index range.
    """
    base = _worklist_base(user=user, filters=filters, today=today)
    # Nested loops only: each counted row probes the patient's future bookings by
    # index (appointment_booked_idx), at most cap + 1 times per bucket. PostgreSQL
    # would rather hash or sort every future booking of the practice first,
    # because it expects ~900 of them where there are ~26,000 at 1× (booked
    # statuses and future start times go together, and it multiplies their odds
    # as if they did not). For a manager of 20 locations, hashing cost 5–6 ms in
    # each of two buckets (25 → 17 ms with hash joins off); with hash joins off
    # it merged instead, sorting the Overdue bucket's 11,700 follow-ups and the
    # 19,000 bookings before its first row counted (55 → 18 ms with merge joins
    # off too; benchmarks/pages.py).
    row = count_each(
        [base.filter(bucket_q(b, today)) for b in BUCKETS], limit=cap, nested_loops=True
    )
    counts = {b: min(n, cap) for b, n in zip(BUCKETS, row, strict=True)}
    more = frozenset(b for b, n in zip(BUCKETS, row, strict=True) if n > cap)
    return TabCounts(counts=counts, more=more)


def _worklist_base(*, user, filters: WorklistFilters, today: dt.date) -> QuerySet[Followup]:
    # The user's locations as literal ids, and patient visibility on the patient the
    # rows join anyway (see patients.selectors.location_ids_for for why).
    location_ids = location_ids_for(user=user)
    here = location_ids
    if filters.location is not None:
        here = [pk for pk in location_ids if pk == filters.location.pk]
    qs = (
        Followup.objects.filter(visible_patient_q(location_ids, via="patient__"))
        .filter(location_id__in=here, status__in=WORKLIST_STATUSES)
        # Snoozed follow-ups wait; unreachable patients drop out (their page says why).
        .exclude(snoozed_until__gt=today)
        .filter(patient__status=Patient.Status.ACTIVE, patient__do_not_contact=False)
        .exclude(patient__preferred_channel=Patient.PreferredChannel.NONE)
        .exclude(_satisfying_booking_exists())
        .annotate(bucket=bucket_expression(today))
    )
    if filters.followup_type_id:
        qs = qs.filter(followup_type_id=filters.followup_type_id)
    if filters.provider_id:
        qs = qs.filter(source_appointment__provider_id=filters.provider_id)
    if filters.assigned_to_id:
        qs = qs.filter(assigned_to_id=filters.assigned_to_id)
    return qs


def worklist_row(*, user, pk: int, today: dt.date) -> Followup:
    """One row, re-read after an action, with the same data the list shows."""
    followup = (
        _with_row_data(followups_visible_to(user).annotate(bucket=bucket_expression(today)))
        .select_related("location")
        .filter(pk=pk)
        .first()
    )
    if followup is None:
        raise Http404("No such follow-up.")
    with_locations([followup], [followup.location])
    return followup


def patient_followups(*, patient: Patient, today: dt.date) -> list[Followup]:
    """The patient's active follow-ups, then the last closed ones, with attempts."""
    return list(
        Followup.objects.filter(patient=patient)
        .annotate(
            bucket=bucket_expression(today),
            active_first=Case(
                When(status__in=ACTIVE_STATUSES, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            ),
        )
        .select_related(
            "followup_type", "location", "assigned_to", "scheduled_appointment__appointment_type"
        )
        .prefetch_related(
            Prefetch("attempts", queryset=ContactAttempt.objects.select_related("staff"))
        )
        .order_by("active_first", "-due_date")[:10]
    )


# --- Cadence rules ------------------------------------------------------------------


def _rule_locations(user, perm: str) -> QuerySet[Location]:
    """Where the user holds `perm` for rules; managing a location also lets one read them."""
    if perm == MANAGE_LOCATION:
        return locations_for(user, MANAGE_LOCATION)
    return Location.objects.filter(
        Q(pk__in=locations_for(user, perm).values("pk"))
        | Q(pk__in=locations_for(user, MANAGE_LOCATION).values("pk"))
    )


def rules_visible_to(user, perm: str = VIEW_REPORTS) -> QuerySet[CadenceRule]:
    """Cadence rules the user may read (VIEW_REPORTS) or change (MANAGE_LOCATION).

    Reading: the rule applies at one of the user's locations (an all-locations rule
    applies at each). Changing: the user manages every location the rule applies
    to — every active location for an all-locations rule — so nobody changes the
    recall cadence of a location they do not run. Closed (inactive) locations of a
    rule count for neither: nobody holds a grant there any more.
    """
    mine = _rule_locations(user, perm).values("pk")
    applies_at_mine = CadenceRule.locations.through.objects.filter(
        location_id__in=mine, location__is_active=True
    ).values("cadencerule_id")
    rules = CadenceRule.objects.filter(
        (Q(all_locations=True) & Exists(Location.objects.filter(pk__in=mine)))
        | Q(pk__in=applies_at_mine)
    )
    if perm == MANAGE_LOCATION:
        unmanaged = Location.objects.filter(is_active=True).exclude(pk__in=mine)
        unmanaged_here = CadenceRule.locations.through.objects.filter(
            cadencerule_id=OuterRef("pk"), location__is_active=True
        ).exclude(location_id__in=mine)
        rules = rules.filter(
            (Q(all_locations=True) & ~Exists(unmanaged))
            | (Q(all_locations=False) & ~Exists(unmanaged_here))
        )
    return rules


def can_read_rules(*, user) -> bool:
    """Whether the cadence rules pages are open to the user: _rule_locations' rule,
    from the request's grants."""
    return holds_anywhere(user, VIEW_REPORTS, MANAGE_LOCATION)


def rule_list(*, user) -> QuerySet[CadenceRule]:
    """The rules page: what the user may read, each marked editable or not (fixed queries)."""
    editable = rules_visible_to(user, MANAGE_LOCATION).filter(pk=OuterRef("pk"))
    return (
        rules_visible_to(user, VIEW_REPORTS)
        .select_related("followup_type")
        .prefetch_related("trigger_types", "satisfying_types", "locations")
        .annotate(editable=Exists(editable))
        .order_by("-is_active", "name")
    )


def rule_get(*, user, pk: int, perm: str = MANAGE_LOCATION) -> CadenceRule:
    """A rule the user may change (or read, with VIEW_REPORTS), else 404."""
    rule = rules_visible_to(user, perm).filter(pk=pk).first()
    if rule is None:
        raise Http404("No such cadence rule.")
    return rule


def rule_location_choices(*, user) -> tuple[QuerySet[Location], bool]:
    """Where the user may scope a rule, and whether "all locations" is theirs to choose."""
    managed = locations_for(user, MANAGE_LOCATION)
    everywhere = (
        managed.exists()
        and not Location.objects.filter(is_active=True)
        .exclude(pk__in=managed.values("pk"))
        .exists()
    )
    return managed.order_by("name"), everywhere
