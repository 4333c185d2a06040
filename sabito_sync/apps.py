from django.apps import AppConfig


class SabitoSyncConfig(AppConfig):
    name = "sabito_sync"
    verbose_name = "Sabito sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
