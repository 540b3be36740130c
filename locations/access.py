"""Who may see and do what, decided in one place.

Roles are named sets of the Location permissions, granted per location with
django-guardian. Every selector that returns patients or appointments narrows its
queryset through `locations_for` — views never build permission queries.

Deliberately, only object permissions count: `accept_global_perms=False` and
`with_superuser=False`, so a model-level permission or the superuser flag (which
the Django admin needs) never widens access to patient records.
"""

from django.db.models import QuerySet
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


def has_location_perm(user, perm: str, location: Location) -> bool:
    return locations_for(user, perm).filter(pk=location.pk).exists()
