"""Follow-up housekeeping run by Celery beat."""

from celery import shared_task

from followups.services import followups_lapse_due, followups_release_stale_bookings


@shared_task
def lapse_followups() -> int:
    """Mark follow-ups past their "lapsed after" date as lapsed; returns how many."""
    return followups_lapse_due()


@shared_task
def release_stale_bookings() -> int:
    """Reopen follow-ups whose booked visit passed unrecorded; returns how many."""
    return followups_release_stale_bookings()
