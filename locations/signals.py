"""Keep guardian's object permissions equal to the LocationGrant rows."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from guardian.shortcuts import assign_perm, get_perms, remove_perm

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
    held = set(get_perms(user, location)) & managed
    with transaction.atomic():
        for perm in wanted - held:
            assign_perm(f"locations.{perm}", user, location)
        for perm in held - wanted:
            remove_perm(f"locations.{perm}", user, location)


@receiver(post_save, sender=LocationGrant)
@receiver(post_delete, sender=LocationGrant)
def _grant_changed(sender, instance: LocationGrant, **kwargs) -> None:
    sync_location_perms(instance.user, instance.location)
