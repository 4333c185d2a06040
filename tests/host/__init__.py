"""A minimal host project for the app alone: the app's test suite runs in it under
each Django version of the matrix (noxfile.py), proving `sabito_sync` needs nothing of
`nexpro` (as django-celery-beat keeps `t/proj`). It knows only the README's documented
settings for a host; `tests/host/settings.py` says where it differs from `nexpro`."""

from .celery import app as celery_app

__all__ = ("celery_app",)
