from django.apps import AppConfig


class PracticeCRMConfig(AppConfig):
    name = "practicecrm"
    verbose_name = "PracticeCRM"

    def ready(self) -> None:
        from practicecrm import admin_audit  # noqa: F401  (read-only audit admin)
        from practicecrm.audit import register_models

        register_models()
