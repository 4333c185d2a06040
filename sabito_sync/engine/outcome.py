"""A run's end: its counters and status, the mapping's summary and, after a
complete and successful run, the new incremental watermark."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from .. import metadata
from ..logs import LOG_PREFIX
from ..models import SabitoMapping, SyncRun
from ..runs import sql as run_sql
from ..runs.result import SyncResult, run_counters
from .client import format_timestamp

logger = logging.getLogger("sabito_sync.sync")


def finish_run(*, run: SyncRun, mapping: SabitoMapping, result: SyncResult, watermark: datetime | None) -> None:
    """Store the run's outcome and the mapping's summary; move the watermark only
    when given one (a complete, successful run). If this run was taken over as
    stale meanwhile, nothing is written: the other run owns the mapping now.

    Whatever goes wrong here, the run ends: a run left "running" would hold its
    mapping until the reaper noticed."""
    problem: Exception | None = None
    for _attempt in (1, 2):
        try:
            record_outcome(run=run, mapping=mapping, result=result, watermark=watermark)
            return
        except Exception as exc:  # a lost connection, or a summary the database refuses
            problem = exc
            if connection.in_atomic_block:
                break
            # A dropped connection (that may be why the sync failed) is dead for
            # good in this process: open a fresh one and try once more.
            logger.warning("%s Reconnecting to the database to record run %s: %s", LOG_PREFIX, run.pk, exc)
            connection.close()
    logger.error("%s Could not record the outcome of run %s: %s", LOG_PREFIX, run.pk, problem)
    try:
        now = timezone.now()
        SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).update(
            status=SyncRun.Status.FAILED,
            finished_at=now,
            heartbeat_at=now,
            error_message=f"{result.error or 'The sync ended'}; its outcome could not be recorded: {problem}",
        )
    except DatabaseError:
        # The database is gone for now: the reaper ends the run once it can.
        logger.exception("%s Could not end run %s", LOG_PREFIX, run.pk)


def record_outcome(*, run: SyncRun, mapping: SabitoMapping, result: SyncResult, watermark: datetime | None) -> None:
    finished_at = timezone.now()
    status = result.status
    values = {
        "status": status,
        "finished_at": finished_at,
        "heartbeat_at": finished_at,
        **run_counters(result),
        "error_message": result.error or "",
    }
    if status == SyncRun.Status.INTERRUPTED:
        # Whoever stopped it (its own process's signal, or the worker through the row),
        # the reaper takes up interrupted runs by this reason.
        values["stop_reason"] = SyncRun.StopReason.SHUTDOWN
    synced_at = format_timestamp(finished_at)
    watermark_text = format_timestamp(watermark) if watermark is not None else None
    if connection.vendor == "postgresql":
        still_ours, stored = run_sql.finish_run_and_record_outcome(
            run=run,
            mapping=mapping,
            values=values,
            summary=metadata.outcome_summary(result=result, full_sync=run.full_sync, synced_at=synced_at),
            watermark=watermark_text,
            finished_at=finished_at,
        )
        if not still_ours:
            logger.warning("%s Run %s was taken over; its outcome is not recorded", LOG_PREFIX, run.pk)
        elif stored is not None:
            mapping.metadata = stored
        return
    with transaction.atomic():
        updated = SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).update(**values)
        if not updated:
            logger.warning("%s Run %s was taken over; its outcome is not recorded", LOG_PREFIX, run.pk)
            return
        locked = SabitoMapping.objects.select_for_update().get(pk=mapping.pk)
        # A mapping re-pointed after this run started keeps its reset watermark: this
        # run read the business (or wrote the tenant) it no longer maps.
        if not same_target(locked, mapping):
            watermark_text = None
        locked.metadata = metadata.with_outcome(
            locked.metadata, result=result, full_sync=run.full_sync, synced_at=synced_at, watermark=watermark_text
        )
        locked.save(update_fields=["metadata", "updated_at"])
        mapping.metadata = locked.metadata


def same_target(stored: SabitoMapping, synced: SabitoMapping) -> bool:
    return (stored.sabito_business_id, stored.tenant_id) == (synced.sabito_business_id, synced.tenant_id)
