"""Celery tasks: thin interfaces over the sync service.

Every task is safe to run twice (Celery delivers at least once): a sync is an
idempotent upsert guarded by the per-mapping run lock, so a redelivered task either
finds the mapping already synced (records skipped) or already running (refused).
"""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from celery.signals import worker_shutting_down
from django.db import transaction

from .conf import load_sabito_settings
from .logs import LOG_PREFIX, fan_out
from .models import SabitoMapping, SyncRun
from . import logcontext, ticks
from .runs import RunNotQueued, reap_dead_runs, request_stop_of_worker_runs
from .serializers import sync_result_data
from .sync import SyncAlreadyRunning, already_running_result, sync_mapping

logger = logging.getLogger("sabito_sync.tasks")


@shared_task(bind=True, name="sabito_sync.sync_mapping", max_retries=None, acks_late=True)
@logcontext.task_log_context  # the task's own lines (a retry) carry the sync's ids
def sync_mapping_task(
    self,
    mapping_id: str,
    full_sync: bool = False,
    trigger: str = SyncRun.Trigger.BEAT,
    run_id: str | None = None,
    tick_id: str | None = None,
) -> dict:
    """Sync one mapping; `run_id` names the queued `SyncRun` the caller made for it
    (the API and the admin do, to follow the run), or None for a new run; `tick_id`
    the fan-out it belongs to (`ticks` counts it when the task returns)."""
    mapping = SabitoMapping.objects.select_related("tenant").filter(pk=mapping_id).first()
    if mapping is None:
        logger.warning("%s Mapping %s no longer exists; nothing to sync", LOG_PREFIX, mapping_id)
        return {"success": False, "error": f"No Sabito mapping with id {mapping_id}"}
    queued_run = SyncRun.objects.filter(pk=run_id).first() if run_id else None
    if run_id and queued_run is None:
        return {"success": False, "error": f"No sync run with id {run_id}"}
    try:
        result = sync_mapping(
            mapping=mapping,
            full_sync=full_sync,
            trigger=trigger,
            queued_run=queued_run,
            worker=self.request.hostname or "",
        )
    except SyncAlreadyRunning as exc:
        return sync_result_data(already_running_result(exc)) | {"alreadyRunning": True}
    except RunNotQueued as exc:
        # Cancelled before a worker took it, or this is a redelivery of a finished run.
        logger.info("%s %s", LOG_PREFIX, exc)
        return {"success": False, "error": str(exc), "runId": str(exc.run.pk), "status": exc.run.status}
    settings = load_sabito_settings()
    if not result.success and result.retryable and self.request.retries < settings.task_max_retries:
        # Transient failures (Sabito down, a database blip) wait 1, 2, 4 … times the
        # delay: long enough for an outage to pass, well inside the broker's
        # visibility timeout. A rejected key or a bad page is not retried.
        countdown = settings.task_retry_delay_seconds * 2**self.request.retries
        logger.warning("%s Retrying %s in %d s: %s", LOG_PREFIX, mapping.business_name, countdown, result.error)
        # The failed run is recorded; the retry is a run of its own.
        raise self.retry(
            countdown=countdown, args=[mapping_id, full_sync, trigger], kwargs={"run_id": None, "tick_id": tick_id}
        )
    return sync_result_data(result)


@shared_task(name="sabito_sync.sync_all_mappings", acks_late=True)
def sync_all_mappings_task(full_sync: bool = False, trigger: str = SyncRun.Trigger.BEAT) -> list[str]:
    """Fan out: one task per active mapping, so mappings sync in parallel across
    workers and one slow business never delays the others."""
    mapping_ids = fan_out(
        logger, lambda: [str(pk) for pk in SabitoMapping.objects.filter(is_active=True).values_list("pk", flat=True)]
    )
    tick_id = ticks.start_tick(expected=len(mapping_ids), full_sync=full_sync, trigger=trigger)
    return [
        sync_mapping_task.apply_async(args=[mapping_id, full_sync, trigger], kwargs=ticks.tick_kwargs(tick_id)).id
        for mapping_id in mapping_ids
    ]


def enqueue_mapping_sync(*, mapping: SabitoMapping, full_sync: bool, trigger: str, run: SyncRun | None = None) -> str:
    """Queue a sync of one mapping (as `run`, a queued `SyncRun`, if given) once the
    current transaction commits, so the worker never looks for a row it cannot see
    yet; returns the task id now."""
    task_id = str(uuid.uuid4())
    args = [str(mapping.pk), full_sync, trigger]
    kwargs = {"run_id": str(run.pk)} if run is not None else {}
    transaction.on_commit(lambda: sync_mapping_task.apply_async(args=args, kwargs=kwargs, task_id=task_id))
    return task_id


def enqueue_mapping_syncs(*, mappings, full_sync: bool, trigger: str) -> list[str]:
    return [enqueue_mapping_sync(mapping=mapping, full_sync=full_sync, trigger=trigger) for mapping in mappings]


@shared_task(name="sabito_sync.reap_dead_runs", acks_late=True)
def reap_dead_runs_task() -> list[str]:
    """On beat, every minute: end the runs whose worker died (their heartbeat went
    stale) and queue their syncs again, and those of runs a worker's shutdown
    interrupted; they resume from their checkpoints, so a mapping whose worker died
    or was stopped becomes exact with nobody involved.

    (An interrupted run is not queued again by its own task: the worker shutting down
    could take that task itself and go on syncing instead of stopping.)"""
    reaped = reap_dead_runs(settings=load_sabito_settings())
    for run in reaped:
        why = "was interrupted by its worker's shutdown" if run.status == SyncRun.Status.INTERRUPTED else "died"
        logger.warning("%s Run %s of mapping %s %s; queued its sync again", LOG_PREFIX, run.pk, run.mapping_id, why)
        sync_mapping_task.apply_async(args=[str(run.mapping_id), run.full_sync, SyncRun.Trigger.RECOVERY])
    return [str(run.pk) for run in reaped]


@worker_shutting_down.connect
def stop_this_workers_runs(sender=None, **kwargs) -> None:
    """A worker told to stop (SIGTERM, Ctrl-C, `docker compose stop`) waits for its
    tasks. Ask its syncs to stop after the page they are writing, as interrupted
    (each queues itself again), so it exits within seconds instead of minutes. The
    signal fires in the worker's main process, the syncs run in its children: the
    request goes through their runs' rows, which their heartbeat threads read."""
    if not sender:
        return
    try:
        asked = request_stop_of_worker_runs(worker=str(sender))
    except Exception:  # a shutdown must go on whatever the database says
        logger.exception("%s Could not ask this worker's syncs to stop", LOG_PREFIX)
        return
    if asked:
        logger.warning("%s Worker %s shutting down: %d running syncs asked to stop after their page", LOG_PREFIX, sender, asked)
