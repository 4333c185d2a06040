"""Every Celery task of the app: thin interfaces over the services and the engine. The
names are a contract with queued messages and beat rows (`services.queueing`). Every
task is safe to run twice: a sync is an idempotent upsert behind its mapping's lock."""

from __future__ import annotations

import logging
import math
from typing import Any

import requests
from celery import shared_task
from django.db import DatabaseError, connection

from . import logcontext
from .conf import SabitoSettings, load_sabito_settings
from .engine.client import SabitoClient
from .engine.sync import sabito_client, sync_mapping
from .logs import LOG_PREFIX, fan_out
from .models import SabitoMapping, SyncRun
from .runs import ticks
from .runs.queries import joinable_run_of
from .runs.reaper import reap_dead_runs
from .runs.result import RunNotQueued, SyncAlreadyRunning, SyncResult, already_running_result, result_data
from .services import alerts, retention
from .services.queueing import (
    PRUNE_RUNS_TASK,
    REAP_DEAD_RUNS_TASK,
    SEND_ALERT_TASK,
    SYNC_ALL_TASK,
    SYNC_MAPPING_CHUNK_TASK,
    SYNC_MAPPING_TASK,
)

logger = logging.getLogger("sabito_sync.tasks")

# The `type: ignore`s at the `apply_async` calls below: celery-types types
# `args` as a tuple and lists no `retries` option, where Celery takes a list or a
# tuple (its message protocol checks for either) and passes `retries` on to the
# message (as `Task.retry` does). These tasks have always sent lists; queued
# messages and the tests expect them.


@shared_task(bind=True, name=SYNC_MAPPING_TASK, max_retries=None, acks_late=True)
@logcontext.task_log_context  # the task's own lines (a retry) carry the sync's ids
def sync_mapping_task(
    self,
    mapping_id: str,
    full_sync: bool = False,
    trigger: str = SyncRun.Trigger.BEAT,
    run_id: str | None = None,
    tick_id: str | None = None,
) -> dict[str, Any]:
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
        return result_data(already_running_result(exc)) | {"alreadyRunning": True}
    except RunNotQueued as exc:
        # Cancelled before a worker took it, or this is a redelivery of a finished run.
        logger.info("%s %s", LOG_PREFIX, exc)
        return {"success": False, "error": str(exc), "runId": str(exc.run.pk), "status": exc.run.status}
    countdown = retry_countdown(result, retries=self.request.retries, settings=load_sabito_settings())
    if countdown is not None:
        logger.warning("%s Retrying %s in %d s: %s", LOG_PREFIX, mapping.business_name, countdown, result.error)
        # The failed run is recorded; the retry is a run of its own.
        raise self.retry(
            countdown=countdown, args=[mapping_id, full_sync, trigger], kwargs={"run_id": None, "tick_id": tick_id}
        )
    return result_data(result)


def retry_countdown(result: SyncResult, *, retries: int, settings: SabitoSettings) -> int | None:
    """Seconds until a failed sync is tried again, or None when it is not: only
    transient failures (Sabito down, a database blip) are, and they wait 1, 2, 4 …
    times the delay, long enough for an outage to pass, well inside the broker's
    visibility timeout. A rejected key or a bad page is not retried."""
    if result.success or not result.retryable or retries >= settings.task_max_retries:
        return None
    return settings.task_retry_delay_seconds * 2**retries


@shared_task(bind=True, name=SYNC_MAPPING_CHUNK_TASK, acks_late=True)
def sync_mapping_chunk_task(
    self,
    mapping_ids: list[str],
    full_sync: bool = False,
    trigger: str = SyncRun.Trigger.BEAT,
    tick_id: str | None = None,
) -> dict[str, Any]:
    """Sync a chunk of a fan-out's mappings one after the other, each as
    `sync_mapping_task` would: its own run, lock, watermark, log lines, signals and
    result. A mapping that fails or is already running never affects the others; one
    whose failure is transient is retried as a task of its own, alone. The chunk costs
    one broker message, one lookup of its mappings and one count towards its tick.

    Delivered twice (acks_late, a worker lost), every mapping syncs again: runs are
    idempotent, a mapping still running is refused by its lock, and the tick counts
    each mapping once."""
    settings = load_sabito_settings()
    mappings = {
        str(mapping.pk): mapping
        for mapping in SabitoMapping.objects.select_related("tenant").filter(pk__in=list(mapping_ids))
    }
    # A mapping with a run a trigger queued is synced as that run (one trigger, one
    # run): its own task then finds it taken and does nothing.
    waiting = {
        mapping_id: run
        for mapping_id, run in joinable_run_of(list(mappings)).items()
        if run.status == SyncRun.Status.QUEUED
    }
    worker = self.request.hostname or ""
    counted: dict[str, dict[str, Any] | None] = {}
    handed_over: list[str] = []  # to tasks of their own, which count them
    client = None
    try:
        for position, mapping_id in enumerate(mapping_ids):
            mapping = mappings.get(str(mapping_id))
            if mapping is None:
                logger.warning("%s Mapping %s no longer exists; nothing to sync", LOG_PREFIX, mapping_id)
                counted[mapping_id] = {"success": False, "error": f"No Sabito mapping with id {mapping_id}"}
                continue
            # One client (one HTTP session) for the chunk's mappings in turn: a new
            # one only after a sync that may have left its fetching mid-request.
            client = client or sabito_client(settings)
            with logcontext.mapping_log_context(mapping_id):
                result = sync_in_chunk(
                    mapping=mapping,
                    full_sync=full_sync,
                    trigger=trigger,
                    worker=worker,
                    client=client,
                    queued_run=waiting.get(str(mapping_id)),
                )
                if not result.success:
                    client.close()
                    client = None
                countdown = retry_countdown(result, retries=0, settings=settings)
                if countdown is not None:
                    logger.warning(
                        "%s Retrying %s alone in %d s: %s", LOG_PREFIX, mapping.business_name, countdown, result.error
                    )
                    # As its own task's first retry, so it waits and gives up as one would.
                    sync_mapping_task.apply_async(  # type: ignore[call-arg]
                        args=[mapping_id, full_sync, trigger],  # type: ignore[arg-type]
                        kwargs=ticks.tick_kwargs(tick_id),
                        countdown=countdown,
                        retries=1,
                    )
                    handed_over.append(mapping_id)
                    continue
            counted[mapping_id] = chunk_result_data(result)
            if result.stopped == SyncRun.Status.INTERRUPTED and mapping_ids[position + 1 :]:
                # This worker is shutting down and waits for the task: the rest of the
                # chunk goes back to the queue, for a worker that stays.
                rest = list(mapping_ids[position + 1 :])
                logger.warning("%s Worker shutting down: %d mappings of the chunk queued again", LOG_PREFIX, len(rest))
                sync_mapping_chunk_task.apply_async(
                    args=[rest, full_sync, trigger],  # type: ignore[arg-type]
                    kwargs=ticks.tick_kwargs(tick_id),
                )
                handed_over.extend(rest)
                break
    finally:
        if client is not None:
            client.close()
        if tick_id:
            # Whatever stopped the chunk, the mappings it did not reach count as failed,
            # as a mapping task that raised does; a retried mapping counts when its task ends.
            unreached = {
                mapping_id: None
                for mapping_id in mapping_ids
                if mapping_id not in counted and mapping_id not in handed_over
            }
            ticks.count_chunk_safely(tick_id=tick_id, results={**counted, **unreached})
    return {
        "mappings": len(mapping_ids),
        "succeeded": sum(1 for data in counted.values() if data and data.get("success")),
        "failed": sum(1 for data in counted.values() if not (data and data.get("success"))),
        "handedOver": len(handed_over),
    }


def sync_in_chunk(
    *,
    mapping: SabitoMapping,
    full_sync: bool,
    trigger: str,
    worker: str,
    client: SabitoClient,
    queued_run: SyncRun | None = None,
) -> SyncResult:
    """One mapping of a chunk, as `queued_run` when a trigger queued one: its result,
    whatever happened (a refusal by its lock, or a failure before its run started,
    included)."""
    try:
        try:
            return sync_mapping(
                mapping=mapping,
                full_sync=full_sync,
                trigger=trigger,
                worker=worker,
                client=client,
                queued_run=queued_run,
            )
        except RunNotQueued:
            # Its own task took it (or it was cancelled) meanwhile: sync as usual, which
            # that run's lock refuses if it is running.
            return sync_mapping(mapping=mapping, full_sync=full_sync, trigger=trigger, worker=worker, client=client)
    except SyncAlreadyRunning as exc:
        return already_running_result(exc)
    except Exception as exc:  # e.g. the database gone before the run started
        logger.exception("%s Could not sync %s", LOG_PREFIX, mapping.business_name)
        # A connection the error broke is replaced, so the next mapping may fare better.
        connection.close_if_unusable_or_obsolete()
        return SyncResult(
            business_id=mapping.sabito_business_id,
            business_name=mapping.business_name,
            error=f"Unexpected error: {exc.__class__.__name__}: {exc}",
            retryable=isinstance(exc, DatabaseError),
        )


def chunk_result_data(result: SyncResult) -> dict[str, Any]:
    """What a chunk keeps of each mapping's result: what the tick adds up. The rest is
    the mapping's run (its counters, error details) and `lastSyncResult`."""
    data: dict[str, Any] = {
        "success": result.success,
        "created": result.created,
        "updated": result.updated,
        "errors": result.errors,
    }
    if result.run_id:
        data["runId"] = result.run_id
    if not result.success:
        data["error"] = result.error
    return data


@shared_task(name=SYNC_ALL_TASK, acks_late=True)
def sync_all_mappings_task(full_sync: bool = False, trigger: str = SyncRun.Trigger.BEAT) -> list[str]:
    """Fan out: the active mappings in chunks (`fanout_chunks`), one task per chunk, so
    mappings sync in parallel across workers while a tick of thousands of mappings
    with nothing new does not pay a broker round trip for each."""
    mapping_ids = fan_out(
        logger, lambda: [str(pk) for pk in SabitoMapping.objects.active().values_list("pk", flat=True)]
    )
    tick_id = ticks.start_tick(expected=len(mapping_ids), full_sync=full_sync, trigger=trigger)
    return [
        sync_mapping_chunk_task.apply_async(
            args=[chunk, full_sync, trigger],  # type: ignore[arg-type]
            kwargs=ticks.tick_kwargs(tick_id),
        ).id
        for chunk in fanout_chunks(mapping_ids, chunk_size=load_sabito_settings().fanout_chunk_size)
    ]


# Fewer mappings than this many chunks' worth are spread over smaller chunks (down to
# one mapping each), so a small deployment's mappings still sync side by side on
# every worker and one slow business delays no other.
FANOUT_MIN_CHUNKS = 100


def fanout_chunks(mapping_ids: list[str], *, chunk_size: int) -> list[list[str]]:
    """The fan-out's chunks: at most `chunk_size` mappings each, and at least
    FANOUT_MIN_CHUNKS chunks while there are that many mappings."""
    size = max(1, min(chunk_size, math.ceil(len(mapping_ids) / FANOUT_MIN_CHUNKS)))
    return [mapping_ids[start : start + size] for start in range(0, len(mapping_ids), size)]


@shared_task(name=REAP_DEAD_RUNS_TASK, acks_late=True)
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
        sync_mapping_task.apply_async(
            args=[str(run.mapping_id), run.full_sync, SyncRun.Trigger.RECOVERY]  # type: ignore[arg-type]
        )
    return [str(run.pk) for run in reaped]


@shared_task(name=PRUNE_RUNS_TASK, acks_late=True)
def prune_runs_task() -> int:
    """Daily, on beat: delete the runs older than SABITO_RUN_RETENTION_DAYS (0 keeps them all)."""
    return retention.prune_runs_by_retention()


@shared_task(
    name=SEND_ALERT_TASK,
    autoretry_for=(requests.RequestException, alerts.WebhookNotAccepted),
    retry_backoff=5,
    retry_backoff_max=600,
    max_retries=8,
    acks_late=True,
)
def send_alert_webhook(payload: dict[str, Any]) -> int:
    """POST one alert (`services.alerts.post_alert`); a refused or unreachable
    receiver is tried again with a growing backoff."""
    return alerts.post_alert(payload)
