"""Background imports: the page queues one, the worker runs it."""

from celery import shared_task

from imports.uploads import upload_import


@shared_task
def run_import(upload_id: str) -> int | None:
    """Import a previewed upload; returns the batch id (None when it could not run)."""
    batch = upload_import(upload_id=upload_id)
    return batch.pk if batch else None
