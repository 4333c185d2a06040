from django.apps import AppConfig


class SabitoSyncConfig(AppConfig):
    name = "sabito_sync"
    verbose_name = "Sabito sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.models.signals import post_migrate

        from . import checks  # noqa: F401  (registers the system checks)
        # Signal receivers and the tasks outside tasks.py: imported here so that every
        # process (web, worker, beat, commands) has them connected and registered.
        from . import alerts, retention, ticks  # noqa: F401
        from .schedule import on_post_migrate

        post_migrate.connect(on_post_migrate, sender=self)
