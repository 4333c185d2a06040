from django.apps import AppConfig


class SabitoSyncConfig(AppConfig):
    name = "sabito_sync"
    verbose_name = "Sabito sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        # Imported here so that every process (web, worker, beat, commands) has the
        # system checks registered, the tasks registered (the services queue them by
        # name) and the signal receivers connected.
        from . import checks, receivers, tasks  # noqa: F401

        post_migrate.connect(receivers.on_post_migrate, sender=self)
