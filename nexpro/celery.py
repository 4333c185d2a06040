import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexpro.settings")

app = Celery("nexpro")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
