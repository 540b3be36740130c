from django.apps import AppConfig


class RemindersConfig(AppConfig):
    name = "reminders"
    verbose_name = "Reminders and outbox"

    def ready(self) -> None:
        from reminders import signals  # noqa: F401 (connects the replanning hooks)
