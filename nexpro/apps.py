from django.apps import AppConfig


class NexproConfig(AppConfig):
    name = "nexpro"
    verbose_name = "NEXPro"

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
