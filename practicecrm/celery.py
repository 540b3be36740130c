"""The Celery app. Worker: `celery -A practicecrm worker`; beat: `celery -A practicecrm beat`."""

import os

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "practicecrm.settings")


class SystemActorTask(Task):
    """Every task runs with the system account as the audit-trail actor.

    Writes made by background work then show "system" as who did it, instead of
    an empty actor that would look like a gap in the trail.
    """

    def __call__(self, *args, **kwargs):
        from practicecrm.audit import system_actor

        # replace=True: an actor left behind by earlier code in this process (a
        # request served in the same thread, an eager call) is not the task's.
        with system_actor(replace=True):
            return super().__call__(*args, **kwargs)


app = Celery("practicecrm", task_cls=SystemActorTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(task=None, **kwargs) -> None:
    """Before and after each task, what Django does around each request: drop a
    connection that is broken or older than CONN_MAX_AGE, keep the others.

    With CELERY_DB_REUSE_MAX set, Celery no longer closes them itself. Not for a
    task run eagerly (`.apply()`, tests): it runs inside its caller, whose open
    transaction Django would take for an unusable connection and close.
    """
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
