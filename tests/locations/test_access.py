"""Per-location grants: roles become guardian object permissions, and nothing else counts."""

import pytest
from django.contrib.auth.models import AnonymousUser, Group, Permission
from guardian.models import UserObjectPermission
from guardian.shortcuts import assign_perm

from locations.access import (
    CHANGE_APPOINTMENTS,
    CHANGE_PATIENTS,
    MANAGE_LOCATION,
    ROLE_PERMISSIONS,
    VIEW_PATIENTS,
    VIEW_REPORTS,
    has_location_perm,
    location_grants,
    locations_for,
)
from locations.models import Location, LocationGrant, Role
from tests.factories import GrantFactory, LocationFactory, UserFactory, staff


def object_perms(user, location) -> set[str]:
    return set(
        UserObjectPermission.objects.filter(user=user, object_pk=str(location.pk)).values_list(
            "permission__codename", flat=True
        )
    )


def test_it_gives_each_role_its_permission_set():
    assert ROLE_PERMISSIONS[Role.CARE_STAFF] == {VIEW_PATIENTS}
    assert ROLE_PERMISSIONS[Role.FRONT_DESK] == {
        VIEW_PATIENTS,
        CHANGE_PATIENTS,
        CHANGE_APPOINTMENTS,
    }
    assert ROLE_PERMISSIONS[Role.PRACTICE_MANAGER] == ROLE_PERMISSIONS[Role.FRONT_DESK] | {
        VIEW_REPORTS
    }
    assert ROLE_PERMISSIONS[Role.ADMIN] == ROLE_PERMISSIONS[Role.PRACTICE_MANAGER] | {
        MANAGE_LOCATION
    }
    assert set(ROLE_PERMISSIONS) == set(Role)


@pytest.mark.parametrize("role", list(Role))
def test_it_turns_a_grant_into_object_permissions_on_that_location_only(north, south, role):
    user = staff(role, north)
    assert object_perms(user, north) == ROLE_PERMISSIONS[role]
    assert object_perms(user, south) == set()
    assert not user.user_permissions.exists(), "never a global permission"
    assert list(locations_for(user)) == [north]


def test_it_takes_the_permissions_away_when_the_grant_is_deleted(north):
    user = staff(Role.FRONT_DESK, north)
    LocationGrant.objects.get(user=user).delete()
    assert object_perms(user, north) == set()
    assert not locations_for(user).exists()


def test_it_keeps_what_another_role_at_the_same_location_still_gives(north):
    user = staff(Role.CARE_STAFF, north)
    grant = GrantFactory(user=user, location=north, role=Role.FRONT_DESK)
    assert has_location_perm(user, CHANGE_PATIENTS, north)
    grant.delete()
    assert object_perms(user, north) == {VIEW_PATIENTS}
    assert not has_location_perm(user, CHANGE_PATIENTS, north)
    assert has_location_perm(user, VIEW_PATIENTS, north)


def test_it_follows_a_change_of_role(north):
    user = staff(Role.FRONT_DESK, north)
    grant = LocationGrant.objects.get(user=user)
    grant.role = Role.CARE_STAFF
    grant.save()
    assert object_perms(user, north) == {VIEW_PATIENTS}


def test_it_moves_the_permissions_when_a_grant_is_moved_to_another_location(north, south):
    user = staff(Role.FRONT_DESK, north)
    grant = LocationGrant.objects.get(user=user)
    grant.location = south
    grant.save()
    assert object_perms(user, north) == set(), "the old location must be taken away"
    assert list(locations_for(user)) == [south]


def test_it_moves_the_permissions_when_a_grant_is_given_to_another_user(north):
    first = staff(Role.FRONT_DESK, north)
    second = UserFactory()
    grant = LocationGrant.objects.get(user=first)
    grant.user = second
    grant.save()
    assert object_perms(first, north) == set()
    assert object_perms(second, north) == ROLE_PERMISSIONS[Role.FRONT_DESK]


def test_it_gives_a_superuser_the_object_permissions_of_their_grant(north):
    # The practice's admin is a Django superuser: the grant must still be written
    # as rows, because superuser status alone opens no patient records.
    user = staff(Role.ADMIN, north, is_superuser=True, is_staff=True)
    assert object_perms(user, north) == ROLE_PERMISSIONS[Role.ADMIN]
    assert list(locations_for(user)) == [north]


def test_it_removes_the_permissions_of_an_inactive_user_when_the_grant_goes(north):
    user = staff(Role.FRONT_DESK, north)
    user.is_active = False
    user.save()
    LocationGrant.objects.get(user=user).delete()
    user.is_active = True
    user.save()
    assert object_perms(user, north) == set()
    assert not locations_for(user).exists()


def test_it_ignores_global_permissions(north):
    user = UserFactory()
    for codename in (VIEW_PATIENTS, CHANGE_PATIENTS, CHANGE_APPOINTMENTS):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    assert user.has_perm(f"locations.{VIEW_PATIENTS}")
    assert not locations_for(user).exists()
    assert not locations_for(user, CHANGE_PATIENTS).exists()


def test_it_ignores_global_permissions_given_through_a_group(north):
    group = Group.objects.create(name="Everyone")
    group.permissions.add(Permission.objects.get(codename=VIEW_PATIENTS))
    user = UserFactory()
    user.groups.add(group)
    assert not locations_for(user).exists()


def test_it_ignores_the_superuser_flag(north):
    user = UserFactory(is_superuser=True, is_staff=True)
    assert not locations_for(user).exists()


def test_it_narrows_to_the_locations_holding_the_permission(north, south):
    user = staff(Role.CARE_STAFF, north)
    GrantFactory(user=user, location=south, role=Role.FRONT_DESK)
    assert set(locations_for(user)) == {north, south}
    assert list(locations_for(user, CHANGE_PATIENTS)) == [south]
    assert not locations_for(user, VIEW_REPORTS).exists()


def test_it_gives_nothing_to_anonymous_or_inactive_users(north):
    assert not locations_for(AnonymousUser()).exists()
    user = staff(Role.ADMIN, north)
    user.is_active = False
    assert not locations_for(user).exists()


def test_it_skips_inactive_locations(north, south):
    user = staff(Role.FRONT_DESK, north, south)
    Location.objects.filter(pk=south.pk).update(is_active=False)
    assert list(locations_for(user)) == [north]


def test_it_needs_every_permission_as_an_object_permission(north):
    # A stray object permission outside the role system still counts only where given.
    user = UserFactory()
    assign_perm(f"locations.{VIEW_PATIENTS}", user, north)
    other = LocationFactory()
    assert list(locations_for(user)) == [north]
    assert not has_location_perm(user, VIEW_PATIENTS, other)


def test_the_grants_read_once_per_request_say_what_locations_for_says(north, south):
    """location_grants (one query, every permission) against guardian's own answer
    per permission: direct grants, a group's object permissions, global permissions
    (which never count), closed locations (neither), inactive and anonymous users."""
    east = LocationFactory(name="East")
    closed = LocationFactory(name="Closed", is_active=False)
    user = staff(Role.FRONT_DESK, north)
    GrantFactory(user=user, location=south, role=Role.ADMIN)
    GrantFactory(user=user, location=closed, role=Role.ADMIN)
    group = Group.objects.create(name="Reporting")
    assign_perm(f"locations.{VIEW_REPORTS}", group, east)
    user.groups.add(group)
    user.user_permissions.add(Permission.objects.get(codename=CHANGE_PATIENTS))

    def both(who):
        grants = location_grants(who)
        for perm in (
            VIEW_PATIENTS,
            CHANGE_PATIENTS,
            CHANGE_APPOINTMENTS,
            VIEW_REPORTS,
            MANAGE_LOCATION,
        ):
            expected = {loc.pk for loc in locations_for(who, perm)}
            assert {pk for pk, held in grants.items() if perm in held} == expected, perm
        return grants

    assert both(user) == {
        north.pk: ROLE_PERMISSIONS[Role.FRONT_DESK],
        south.pk: ROLE_PERMISSIONS[Role.ADMIN],
        east.pk: {VIEW_REPORTS},
    }
    user.is_active = False
    user.save()
    del user._location_grants  # kept on the user object for its request
    assert both(user) == {}
    assert location_grants(AnonymousUser()) == {}
