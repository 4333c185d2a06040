# Expose the Celery app so that `celery -A nexpro` and shared_task find it.
from .celery import app as celery_app

__all__ = ("celery_app",)
