from django.apps import AppConfig


class LocationsConfig(AppConfig):
    name = "locations"
    verbose_name = "Locations and access"

    def ready(self) -> None:
        from locations import signals  # noqa: F401
