"""Celery tasks: thin interfaces over the sync service.

Every task is safe to run twice (Celery delivers at least once): a sync is an
idempotent upsert guarded by the per-mapping run lock, so a redelivered task either
finds the mapping already synced (records skipped) or already running (refused).
"""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from django.db import transaction

from .conf import load_sabito_settings
from .models import SabitoMapping, SyncRun
from .sync import LOG_PREFIX, SyncAlreadyRunning, already_running_result, sync_mapping
from . import logcontext, ticks  # operations hooks: log context, the fan-out's summary

logger = logging.getLogger("sabito_sync.tasks")


@shared_task(bind=True, name="sabito_sync.sync_mapping", max_retries=None, acks_late=True)
@logcontext.task_log_context  # operations hook: the task's own lines (a retry) carry the sync's ids
def sync_mapping_task(
    self, mapping_id: str, full_sync: bool = False, trigger: str = SyncRun.Trigger.BEAT, tick_id: str | None = None
) -> dict:
    # tick_id: the fan-out this task belongs to; sabito_sync.ticks counts it when the task returns.
    mapping = SabitoMapping.objects.select_related("tenant").filter(pk=mapping_id).first()
    if mapping is None:
        logger.warning("%s Mapping %s no longer exists; nothing to sync", LOG_PREFIX, mapping_id)
        return {"success": False, "error": f"No Sabito mapping with id {mapping_id}"}
    try:
        result = sync_mapping(mapping=mapping, full_sync=full_sync, trigger=trigger)
    except SyncAlreadyRunning as exc:
        return already_running_result(exc).as_dict() | {"alreadyRunning": True}
    sabito = load_sabito_settings()
    if not result.success and result.retryable and self.request.retries < sabito.task_max_retries:
        # Transient failures (Sabito down, a database blip) wait 1, 2, 4 … times the
        # delay: long enough for an outage to pass, well inside the broker's
        # visibility timeout. A rejected key or a bad page is not retried.
        countdown = sabito.task_retry_delay_seconds * 2**self.request.retries
        logger.warning("%s Retrying %s in %d s: %s", LOG_PREFIX, mapping.business_name, countdown, result.error)
        raise self.retry(countdown=countdown)
    return result.as_dict()


@shared_task(name="sabito_sync.sync_all_mappings", acks_late=True)
def sync_all_mappings_task(full_sync: bool = False, trigger: str = SyncRun.Trigger.BEAT) -> list[str]:
    """Fan out: one task per active mapping, so mappings sync in parallel across
    workers and one slow business never delays the others."""
    logger.info("%s Starting sync for all tenants...", LOG_PREFIX)
    mapping_ids = [str(pk) for pk in SabitoMapping.objects.filter(is_active=True).values_list("pk", flat=True)]
    logger.info("%s Found %d tenant mappings to sync", LOG_PREFIX, len(mapping_ids))
    tick_id = ticks.start_tick(expected=len(mapping_ids), full_sync=full_sync, trigger=trigger)  # operations hook
    return [
        sync_mapping_task.apply_async(args=[mapping_id, full_sync, trigger], kwargs=ticks.tick_kwargs(tick_id)).id
        for mapping_id in mapping_ids
    ]


def enqueue_mapping_sync(*, mapping: SabitoMapping, full_sync: bool, trigger: str) -> str:
    """Queue a sync of one mapping once the current transaction commits (so the
    worker never looks for a row it cannot see yet); returns the task id now."""
    task_id = str(uuid.uuid4())
    args = [str(mapping.pk), full_sync, trigger]
    transaction.on_commit(lambda: sync_mapping_task.apply_async(args=args, task_id=task_id))
    return task_id


def enqueue_mapping_syncs(*, mappings, full_sync: bool, trigger: str) -> list[str]:
    return [enqueue_mapping_sync(mapping=mapping, full_sync=full_sync, trigger=trigger) for mapping in mappings]

