"""Where a user may read reports: one rule, in one place (locations.access)."""

from django.db.models import QuerySet
from django.http import Http404

from locations.access import VIEW_REPORTS, location_grants
from locations.models import Location


def report_locations(user) -> QuerySet[Location]:
    """Active locations where the user holds VIEW_REPORTS (practice managers, admins).

    locations_for()'s rule, on the grants the request reads once for every check
    (location_grants: the navigation has them already), by literal ids.
    """
    ids = [pk for pk, perms in location_grants(user).items() if VIEW_REPORTS in perms]
    return Location.objects.filter(pk__in=ids).order_by("name")


def can_view_reports(*, user) -> bool:
    return report_locations(user).exists()


def pick_locations(allowed: list[Location], chosen: list[int] | None) -> list[Location]:
    """The chosen locations among `allowed` (all of them when none is chosen).

    A location outside `allowed` is a 404, as another location's record is: the
    answer does not reveal whether it exists.
    """
    if not chosen:
        return allowed
    by_id = {loc.pk: loc for loc in allowed}
    if any(pk not in by_id for pk in chosen):
        raise Http404("No such location.")
    return [by_id[pk] for pk in chosen]
