"""The periodic sync as a django-celery-beat row, and the start-up sync.

The schedule is a `PeriodicTask` row (operators see and pause it in the admin)
that this app creates or updates from SABITO_SYNC_INTERVAL under one stable name,
after `migrate` and when beat starts. It never touches other rows.
"""

from __future__ import annotations

import json
import logging

from celery.signals import beat_init
from django.db import transaction

from .conf import SabitoSettingsError, load_sabito_settings
from .logs import LOG_PREFIX

logger = logging.getLogger("sabito_sync.schedule")

PERIODIC_TASK_NAME = "Sabito sync: all active mappings"
SYNC_ALL_TASK = "sabito_sync.sync_all_mappings"


def ensure_periodic_sync_schedule():
    """Create or update the periodic sync row from the settings; returns it."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    sabito = load_sabito_settings()
    minute, hour, day_of_month, month_of_year, day_of_week = sabito.sync_interval.split()
    with transaction.atomic():
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
            timezone="UTC",
        )
        task, created = PeriodicTask.objects.update_or_create(
            name=PERIODIC_TASK_NAME,
            defaults={
                "task": SYNC_ALL_TASK,
                "crontab": crontab,
                "interval": None,
                "enabled": sabito.sync_enabled,
                "kwargs": json.dumps({"full_sync": False, "trigger": "beat"}),
                "description": (
                    f"Incremental Sabito sync of every active mapping, cron '{sabito.sync_interval}' (UTC), "
                    "from SABITO_SYNC_INTERVAL; SABITO_SYNC_ENABLED turns it on or off. "
                    "Both are re-applied when beat starts or migrations run."
                ),
            },
        )
    logger.info(
        "%s Periodic sync %s: cron '%s' (UTC), %s",
        LOG_PREFIX,
        "created" if created else "updated",
        sabito.sync_interval,
        "enabled" if sabito.sync_enabled else "disabled (SABITO_SYNC_ENABLED=false)",
    )
    return task


def on_post_migrate(sender, app_config=None, using="default", **kwargs):
    if app_config is None or app_config.label != "sabito_sync":
        return
    try:
        ensure_periodic_sync_schedule()
    except SabitoSettingsError as exc:
        # The system checks report it; migrating must still work.
        logger.warning("%s Periodic sync not scheduled, invalid settings: %s", LOG_PREFIX, exc)


@beat_init.connect
def on_beat_start(sender=None, **kwargs):
    """Beat runs once per stack (it must: it has no lock of its own), so its start is
    the one moment that is "the stack started" rather than "a worker process
    started": refresh the schedule and queue the start-up sync here; the workers
    pick it up as soon as they are up."""
    task = ensure_periodic_sync_schedule()
    logger.info("%s Scheduler started: periodic sync %s", LOG_PREFIX, "on" if task.enabled else "off")
    queue_startup_sync()


def queue_startup_sync() -> str | None:
    sabito = load_sabito_settings()
    if not (sabito.sync_enabled and sabito.sync_on_startup):
        logger.info("%s Start-up sync skipped (SABITO_SYNC_ON_STARTUP or SABITO_SYNC_ENABLED is off)", LOG_PREFIX)
        return None
    from .tasks import sync_all_mappings_task

    task_id = sync_all_mappings_task.apply_async(kwargs={"full_sync": False, "trigger": "startup"}).id
    logger.info("%s Start-up sync queued (task %s)", LOG_PREFIX, task_id)
    return task_id
