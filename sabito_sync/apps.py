from django.apps import AppConfig


class SabitoSyncConfig(AppConfig):
    name = "sabito_sync"
    verbose_name = "Sabito sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.models.signals import post_migrate

        from . import checks  # noqa: F401  (registers the system checks)
        from .schedule import on_post_migrate

        post_migrate.connect(on_post_migrate, sender=self)
