"""The Celery app. Worker: `celery -A practicecrm worker`; beat: `celery -A practicecrm beat`."""

import os

from celery import Celery, Task

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
