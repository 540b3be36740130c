"""Celery tasks of the outbox: the per-minute dispatcher and the sends it queues."""

from collections import Counter

from celery import shared_task

from reminders import tallies
from reminders.reconcile import reconcile_stale_sending
from reminders.recovery import requeue_stale_queued
from reminders.services import dispatch_due, message_send, messages_send


@shared_task
def dispatch_reminders() -> int:
    """Beat, every minute: claim due rows and queue their sends; returns how many."""
    return len(dispatch_due())


@shared_task
def send_messages(message_ids: list[int]) -> dict[str, int]:
    """Send a batch of outbox rows (the dispatcher's); returns how many ended how.

    Safe to deliver twice: each row is claimed by one delivery only.
    """
    return dict(Counter(str(status) for status in messages_send(message_ids=message_ids).values()))


@shared_task
def send_message(message_id: int) -> str:
    """Send one outbox row (replies to a patient's SMS). Safe to deliver twice."""
    return message_send(message_id=message_id)


@shared_task
def reconcile_sending() -> dict[str, int]:
    """Beat, every 5 minutes: settle sends a dead worker left in "sending"."""
    return reconcile_stale_sending()


@shared_task
def compact_message_tallies() -> int:
    """Beat, every minute: fold the outbox's pending count changes into its tally."""
    return tallies.compact()


@shared_task
def requeue_queued() -> int:
    """Beat, every 5 minutes: put rows whose send task the broker lost back in line."""
    return requeue_stale_queued()


@shared_task
def replan_locations(location_ids: list[int]) -> int:
    """After outreach setup changes (schedule, plan, quiet hours, caps, switches):
    replan the future messages of these locations; returns how many were planned."""
    from locations.models import Location
    from reminders.planning import plan_all

    return plan_all(locations=list(Location.objects.filter(pk__in=location_ids)))
