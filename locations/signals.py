"""Keep guardian's object permissions equal to the LocationGrant rows."""

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver
from guardian.models import UserObjectPermission
from guardian.shortcuts import assign_perm, remove_perm

from locations.access import ROLE_PERMISSIONS
from locations.models import Location, LocationGrant


def sync_location_perms(user, location: Location) -> None:
    """Make the user's permissions on `location` the union of their roles there."""
    wanted: set[str] = set()
    for role in LocationGrant.objects.filter(user=user, location=location).values_list(
        "role", flat=True
    ):
        wanted |= ROLE_PERMISSIONS[role]
    managed = set().union(*ROLE_PERMISSIONS.values())
    # The permission rows themselves, not guardian's get_perms(): that answers
    # "everything" for a superuser and "nothing" for an inactive user, so a
    # superuser admin would never be given their grants and a deactivated user
    # would keep theirs after the grant is removed.
    held = set(
        UserObjectPermission.objects.filter(
            user=user,
            content_type=ContentType.objects.get_for_model(Location),
            object_pk=str(location.pk),
            permission__codename__in=managed,
        ).values_list("permission__codename", flat=True)
    )
    with transaction.atomic():
        for perm in wanted - held:
            assign_perm(f"locations.{perm}", user, location)
        for perm in held - wanted:
            remove_perm(f"locations.{perm}", user, location)


@receiver(pre_save, sender=LocationGrant)
def _remember_previous_holder(sender, instance: LocationGrant, **kwargs) -> None:
    # An admin may edit a grant to another user or location: the previous pair
    # must then lose what only this grant gave it.
    instance._previous_holder = (  # type: ignore[attr-defined]
        LocationGrant.objects.filter(pk=instance.pk).values_list("user_id", "location_id").first()
        if instance.pk
        else None
    )


@receiver(post_save, sender=LocationGrant)
@receiver(post_delete, sender=LocationGrant)
def _grant_changed(sender, instance: LocationGrant, **kwargs) -> None:
    sync_location_perms(instance.user, instance.location)
    previous = getattr(instance, "_previous_holder", None)
    if previous and previous != (instance.user_id, instance.location_id):
        user_id, location_id = previous
        sync_location_perms(
            get_user_model().objects.get(pk=user_id), Location.objects.get(pk=location_id)
        )
