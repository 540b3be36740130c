"""Who may see and do what, decided in one place.

Roles are named sets of the Location permissions, granted per location with
django-guardian. Every selector that returns patients or appointments narrows its
queryset through `locations_for` — views never build permission queries.

Deliberately, only object permissions count: `accept_global_perms=False` and
`with_superuser=False`, so a model-level permission or the superuser flag (which
the Django admin needs) never widens access to patient records.
"""

from django.contrib.contenttypes.models import ContentType
from django.db.models import CharField, QuerySet
from django.db.models.functions import Cast
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import get_objects_for_user

from locations.models import Location, Role

VIEW_PATIENTS = "view_patients"
CHANGE_PATIENTS = "change_patients"
CHANGE_APPOINTMENTS = "change_appointments"
VIEW_REPORTS = "view_reports"
MANAGE_LOCATION = "manage_location"

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.FRONT_DESK: frozenset({VIEW_PATIENTS, CHANGE_PATIENTS, CHANGE_APPOINTMENTS}),
    Role.CARE_STAFF: frozenset({VIEW_PATIENTS}),
    Role.PRACTICE_MANAGER: frozenset(
        {VIEW_PATIENTS, CHANGE_PATIENTS, CHANGE_APPOINTMENTS, VIEW_REPORTS}
    ),
    Role.ADMIN: frozenset(
        {VIEW_PATIENTS, CHANGE_PATIENTS, CHANGE_APPOINTMENTS, VIEW_REPORTS, MANAGE_LOCATION}
    ),
}


def locations_for(user, perm: str = VIEW_PATIENTS) -> QuerySet[Location]:
    """Active locations where `user` holds `perm` through a grant."""
    if not user.is_authenticated or not user.is_active:
        return Location.objects.none()
    return get_objects_for_user(
        user,
        f"locations.{perm}",
        klass=Location.objects.filter(is_active=True),
        accept_global_perms=False,
        with_superuser=False,
    )


def location_grants(user) -> dict[int, frozenset[str]]:
    """Each active location where `user` holds a permission, with the permissions.

    What `locations_for` answers one permission at a time — the same object
    permissions, held directly or through a group — in one query, kept on the user
    object, which lives for one request (the auth middleware loads it per request):
    a page asks for several permissions (its rows, its actions, the navigation), and
    each guardian subquery cost a query and most of a millisecond to build.
    """
    cached = getattr(user, "_location_grants", None)
    if cached is not None:
        return cached
    grants: dict[int, set[str]] = {}
    if user.is_authenticated and user.is_active:
        content_type = ContentType.objects.get_for_model(Location)
        active = (
            Location.objects.filter(is_active=True)
            .annotate(key=Cast("pk", CharField()))
            .values("key")
        )
        direct = UserObjectPermission.objects.filter(
            user=user, content_type=content_type, object_pk__in=active
        ).values_list("object_pk", "permission__codename")
        through_groups = GroupObjectPermission.objects.filter(
            group__user=user, content_type=content_type, object_pk__in=active
        ).values_list("object_pk", "permission__codename")
        for pk, codename in direct.union(through_groups):
            grants.setdefault(int(pk), set()).add(codename)
    frozen = {pk: frozenset(perms) for pk, perms in grants.items()}
    user._location_grants = frozen
    return frozen


def holds_anywhere(user, *perms: str) -> bool:
    """Whether the user holds one of `perms` at some active location (from the
    request's grants: no query once location_grants has been read)."""
    return any(held.intersection(perms) for held in location_grants(user).values())


def has_location_perm(user, perm: str, location: Location) -> bool:
    return locations_for(user, perm).filter(pk=location.pk).exists()
