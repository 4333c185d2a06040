"""Every django-celery-beat row of the app (the periodic sync, the dead-run reaper,
the daily prune), and the start-up sync.

Each row has one stable name; this module creates it after `migrate` and when beat
starts, and from then on it is the operator's: a pause or an edit in the admin
stands. Only the periodic sync follows settings (SABITO_SYNC_INTERVAL and
SABITO_SYNC_ENABLED), written again when one of them changes. Other apps' periodic
tasks are never touched.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from ..conf import SabitoSettings, SabitoSettingsError, load_sabito_settings
from ..logs import LOG_PREFIX
from ..models import AppliedSchedule, SyncRun
from . import queueing

if TYPE_CHECKING:
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

logger = logging.getLogger("sabito_sync.schedule")

PERIODIC_TASK_NAME = "Sabito sync: all active mappings"


def ensure_periodic_sync_schedule() -> PeriodicTask:
    """Create the periodic sync row, or write to it the settings that changed since
    they were last applied; returns the row.

    The settings are compared with what was last applied (`AppliedSchedule`), not
    with the row, so the row's state in the admin is never mistaken for a change of
    settings. Only what a changed setting controls is written: a paused row stays
    paused when the interval changes."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    settings = load_sabito_settings()
    with transaction.atomic():
        task = PeriodicTask.objects.select_for_update().filter(name=PERIODIC_TASK_NAME).first()
        applied = AppliedSchedule.objects.filter(periodic_task_name=PERIODIC_TASK_NAME).first()
        replaced_crontab_id = None
        if task is None:
            task = PeriodicTask(
                name=PERIODIC_TASK_NAME,
                task=queueing.SYNC_ALL_TASK,
                crontab=crontab_for(settings.sync_interval),
                enabled=settings.sync_enabled,
                kwargs=json.dumps({"full_sync": False, "trigger": SyncRun.Trigger.BEAT}),
            )
            how = "created" if applied is None else "recreated (the row had been deleted)"
            outcome = f"{how}: cron '{settings.sync_interval}' (UTC), {state(settings.sync_enabled)}"
        elif applied is None:
            # A row written before the applied settings were recorded may hold a pause
            # made in the admin: keep it, and take the settings as applied from now on.
            outcome = f"kept as it is in the admin ({state(task.enabled)}); settings recorded as applied"
        else:
            changes = []
            if applied.sync_interval != settings.sync_interval:
                replaced_crontab_id = task.crontab_id
                task.crontab = crontab_for(settings.sync_interval)
                task.interval = task.solar = task.clocked = None  # a row has one schedule
                changes.append(f"SABITO_SYNC_INTERVAL '{applied.sync_interval}' -> '{settings.sync_interval}'")
            if applied.sync_enabled != settings.sync_enabled:
                task.enabled = settings.sync_enabled
                changes.append(f"SABITO_SYNC_ENABLED {flag(applied.sync_enabled)} -> {flag(settings.sync_enabled)}")
            if not changes:
                logger.info(
                    "%s Periodic sync left as it is in the admin (%s): settings unchanged since %s UTC",
                    LOG_PREFIX,
                    state(task.enabled),
                    f"{applied.applied_at:%Y-%m-%d %H:%M}",
                )
                return task
            outcome = f"updated, settings changed: {', '.join(changes)}"
        applied_at = timezone.now()
        task.description = describe_origin(settings, applied_at)
        task.save()
        AppliedSchedule.objects.update_or_create(
            periodic_task_name=PERIODIC_TASK_NAME,
            defaults={
                "sync_interval": settings.sync_interval,
                "sync_enabled": settings.sync_enabled,
                "applied_at": applied_at,
            },
        )
        if replaced_crontab_id is not None and replaced_crontab_id != task.crontab_id:
            # Deleting a crontab deletes the tasks on it: only one nobody uses goes.
            CrontabSchedule.objects.filter(pk=replaced_crontab_id, periodictask__isnull=True).delete()
    logger.info("%s Periodic sync %s", LOG_PREFIX, outcome)
    return task


def crontab_for(expression: str) -> CrontabSchedule:
    from django_celery_beat.models import CrontabSchedule

    minute, hour, day_of_month, month_of_year, day_of_week = expression.split()
    fields = {
        "minute": minute,
        "hour": hour,
        "day_of_month": day_of_month,
        "month_of_year": month_of_year,
        "day_of_week": day_of_week,
        "timezone": "UTC",
    }
    # Not get_or_create: an operator may have made an identical crontab in the admin.
    return CrontabSchedule.objects.filter(**fields).order_by("pk").first() or CrontabSchedule.objects.create(**fields)


def flag(value: bool) -> str:
    return "true" if value else "false"


def state(enabled: bool) -> str:
    return "enabled" if enabled else "disabled"


def describe_origin(settings: SabitoSettings, applied_at: datetime) -> str:
    return (
        "Incremental Sabito sync of every active mapping, created by the sabito_sync app from "
        f"SABITO_SYNC_INTERVAL='{settings.sync_interval}' (UTC) and SABITO_SYNC_ENABLED={flag(settings.sync_enabled)}, "
        f"last applied {applied_at:%Y-%m-%d %H:%M} UTC. A pause (untick Enabled) or an edit made here stands "
        "through migrate and beat restarts; only a change of one of those settings rewrites what it controls."
    )


REAPER_TASK_NAME = "Sabito sync: recover dead runs"
REAPER_EVERY_SECONDS = 60


def ensure_reaper_schedule() -> PeriodicTask:
    """The reaper's row (every minute), created when missing and otherwise left as
    the operator has it: it has no settings to apply."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    with transaction.atomic():
        task = PeriodicTask.objects.filter(name=REAPER_TASK_NAME).first()
        if task is not None:
            return task
        every = IntervalSchedule.objects.filter(every=REAPER_EVERY_SECONDS, period=IntervalSchedule.SECONDS).first()
        every = every or IntervalSchedule.objects.create(every=REAPER_EVERY_SECONDS, period=IntervalSchedule.SECONDS)
        task = PeriodicTask.objects.create(
            name=REAPER_TASK_NAME,
            task=queueing.REAP_DEAD_RUNS_TASK,
            interval=every,
            description=(
                "Ends the Sabito sync runs whose worker died (no heartbeat for SABITO_STALE_RUN_AFTER seconds) "
                "and queues their syncs again, to resume from their checkpoints. Created by the sabito_sync app; "
                "a pause or an edit made here stands."
            ),
        )
    logger.info("%s Dead-run reaper scheduled: every %d s", LOG_PREFIX, REAPER_EVERY_SECONDS)
    return task


PRUNE_PERIODIC_TASK_NAME = "Sabito sync: delete old runs"
PRUNE_CRON = "17 3 * * *"  # daily, at a quiet minute (UTC)


def ensure_prune_schedule() -> PeriodicTask:
    """Create the daily prune row if it is missing. Once created it is the operator's
    (pause or reschedule it in the admin); the retention itself is read at run time."""
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.filter(name=PRUNE_PERIODIC_TASK_NAME).first()
    if task is not None:
        return task
    task = PeriodicTask.objects.create(
        name=PRUNE_PERIODIC_TASK_NAME,
        task=queueing.PRUNE_RUNS_TASK,
        crontab=crontab_for(PRUNE_CRON),
        kwargs=json.dumps({}),
        description=(
            "Deletes sync runs older than SABITO_RUN_RETENTION_DAYS (0 keeps them all), keeping each "
            "mapping's latest run and latest successful run. Created by the sabito_sync app when missing; "
            "a pause or a new time set here stands."
        ),
    )
    logger.info("%s Daily deletion of old runs scheduled: cron '%s' (UTC)", LOG_PREFIX, PRUNE_CRON)
    return task


def ensure_schedules(*, periodic_sync_required: bool) -> PeriodicTask | None:
    """Every row of the app, created or brought up to date; returns the periodic
    sync's. With invalid settings the periodic sync is not written: `migrate` still
    works (the system checks report them, `periodic_sync_required=False`), and beat
    refuses to start (`True`)."""
    ensure_reaper_schedule()
    ensure_prune_schedule()
    try:
        return ensure_periodic_sync_schedule()
    except SabitoSettingsError as exc:
        if periodic_sync_required:
            raise
        logger.warning("%s Periodic sync not scheduled, invalid settings: %s", LOG_PREFIX, exc)
        return None


def queue_startup_sync(*, periodic_sync_enabled: bool = True) -> str | None:
    """Queue the start-up sync, unless the settings turn it off or the periodic sync
    is paused (in the admin, which then stands for every automatic sync)."""
    settings = load_sabito_settings()
    if not (settings.sync_enabled and settings.sync_on_startup):
        logger.info("%s Start-up sync skipped (SABITO_SYNC_ON_STARTUP or SABITO_SYNC_ENABLED is off)", LOG_PREFIX)
        return None
    if not periodic_sync_enabled:
        logger.info("%s Start-up sync skipped: the periodic sync is paused in the admin", LOG_PREFIX)
        return None
    task_id = queueing.queue_sync_of_all_mappings(full_sync=False, trigger=SyncRun.Trigger.STARTUP)
    logger.info("%s Start-up sync queued (task %s)", LOG_PREFIX, task_id)
    return task_id
