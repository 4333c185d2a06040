"""The sync of one mapping, top to bottom, and of every mapping in turn. docs/how-a-sync-works.md
tells the story step by step, naming each step's module."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError

from .. import logcontext, logs
from .. import signals as sync_signals
from ..conf import SabitoSettings, load_sabito_settings
from ..logs import LOG_PREFIX, fan_out
from ..models import SabitoMapping, SyncRun
from ..runs.heartbeat import RunPulse
from ..runs.lock import open_run
from ..runs.result import RunTakenOver, SyncAlreadyRunning, SyncResult, already_running_result
from ..runs.resume import Resume, chain_checkpoint
from .batch import mostly_unchanged, write_batch
from .client import SabitoClient, SabitoError, format_timestamp
from .missing import mark_missing_customers
from .outcome import finish_run
from .prefetch import prefetch_depth, prefetched_pages

logger = logging.getLogger("sabito_sync.sync")


@logcontext.sync_log_context  # every log line of the sync carries its ids
def sync_mapping(
    *,
    mapping: SabitoMapping,
    full_sync: bool = False,
    trigger: str = SyncRun.Trigger.CLI,
    client: SabitoClient | None = None,
    on_page: Callable[[SyncResult], None] | None = None,
    queued_run: SyncRun | None = None,
    worker: str = "",
) -> SyncResult:
    """Sync one mapping's customers from Sabito, as `queued_run` if the caller queued
    one; `on_page` is called with the result so far after each written batch of pages.
    Raises `SyncAlreadyRunning` if another run holds the mapping and
    `RunNotQueued` if `queued_run` is no longer waiting; every other failure is
    reported in the returned result."""
    settings = load_sabito_settings()
    # Carries on where an unfinished run of the mapping stopped, if one did recently.
    run, resume = open_run(
        mapping=mapping, full_sync=full_sync, trigger=trigger, settings=settings, queued_run=queued_run, worker=worker
    )
    full_sync, updated_after = run.full_sync, run.updated_after
    logcontext.bind(run_id=run.pk)
    chain = chain_checkpoint(
        mapping=mapping,
        full_sync=full_sync,
        updated_after=updated_after,
        chain_started_at=datetime.fromisoformat(resume.checkpoint["chainStartedAt"]) if resume else run.started_at,
        resumed=resume is not None,
    )
    result = SyncResult(business_id=mapping.sabito_business_id, business_name=mapping.business_name, run_id=str(run.pk))
    log_start(mapping, full_sync=full_sync, updated_after=updated_after, resume=resume)

    own_client = client is None
    client = client or sabito_client(settings)
    seen_ids: set[str] = set()
    # A mapping synced before has most of its records stored already, unless they
    # changed since: a full sync finds them by their fingerprints from the first
    # batch on (and an incremental one loses next to nothing by trying).
    expect_stored = mapping.last_synced_at is not None
    # Records waiting for an address another customer holds (see `batch`).
    deferred: list[dict[str, Any]] = list(resume.checkpoint.get("deferred") or []) if resume else []
    with RunPulse(run, interval=settings.heartbeat_seconds) as pulse:
        try:
            with prefetched_pages(
                client,
                business_id=mapping.sabito_business_id,
                updated_after=updated_after,
                start=resume.checkpoint if resume else None,
                should_stop=lambda: pulse.stop_reason is not None,
                depth=prefetch_depth(batch_records=settings.write_batch_records, page_size=settings.page_size),
                defer_validation=expect_stored,
            ) as pages:
                for batch in pages.batches(max_records=settings.write_batch_records):
                    validated = batch.validated
                    # Per batch at DEBUG: a 100,000-customer sync has 50 of 2,000.
                    logger.debug(
                        "%s Batch of %d customers in %d pages (from offset %d)",
                        LOG_PREFIX,
                        len(validated),
                        len(batch.pages),
                        batch.offset,
                    )
                    run.checkpoint = {**chain, **batch.resume_from} if batch.resume_from else None
                    write_batch(
                        run=run,
                        mapping=mapping,
                        validated=validated,
                        pages=len(batch.pages),
                        seen_ids=seen_ids,
                        result=result,
                        deferred=deferred,
                        fingerprints=batch.fingerprints,
                        expect_stored=expect_stored,
                    )
                    # A re-sync: most records are stored already, and finding them by
                    # their fingerprint costs less than checking them first.
                    pages.defer_validation = mostly_unchanged(result)
                    if on_page is not None:
                        on_page(result)
                    if pulse.stop_reason is not None:
                        break
                else:
                    if not pages.stopped_early:
                        pulse.stop_reason = None  # the feed ended: a late stop request changes nothing
            if pulse.stop_reason == RunPulse.TAKEN_OVER:
                raise RunTakenOver()
            if pulse.stop_reason is not None:
                stop(result, run=run, reason=pulse.stop_reason)
            elif deferred:
                # Every page is written: the holders that were to move on have.
                logger.info("%s Trying again %d records whose address another customer held", LOG_PREFIX, len(deferred))
                write_batch(
                    run=run, mapping=mapping, validated=deferred, pages=0, seen_ids=seen_ids, result=result, final=True
                )
        except SabitoError as exc:
            result.error, result.retryable = str(exc), exc.retryable
        except RunTakenOver:
            result.error = "This run stopped making progress and was taken over by another run."
        except DatabaseError as exc:
            result.error, result.retryable = f"Database error: {exc}", True
        except Exception as exc:  # a bug must not leave the run "running" forever
            logger.exception("%s Unexpected error while syncing %s", LOG_PREFIX, mapping.business_name)
            result.error = f"Unexpected error: {exc.__class__.__name__}: {exc}"
        except BaseException as exc:
            # Stopped from outside in the middle of a batch (Ctrl-C, the process made to
            # exit): the batches written stay, with their checkpoint; record how it ended
            # and re-raise.
            stopped_from_outside(result, run=run, exc=exc)
            finish_run(run=run, mapping=mapping, result=result, watermark=None)
            raise
        finally:
            if own_client:
                client.close()

        watermark = None
        if result.error is None:
            result.success = True
            # The start of the logical sync, resumed or not: whatever changed since
            # then is behind the checkpoint's offset, so this run has read it.
            watermark = datetime.fromisoformat(chain["chainStartedAt"]) - timedelta(seconds=settings.overlap_seconds)
            if full_sync:
                watermark = mark_missing_or_fail(
                    mapping=mapping, result=result, seen_ids=seen_ids, chain=chain, watermark=watermark
                )
        finish_run(run=run, mapping=mapping, result=result, watermark=watermark)
    sync_signals.run_finished(mapping=mapping, result=result)  # sync_finished, and the alerts

    # The guide's line, once per mapping: the feed's length is known only at its end.
    logger.info("%s Found %d customers to sync", LOG_PREFIX, result.processed)
    if result.success:
        logger.info("%s Sync completed for %s: %s", LOG_PREFIX, mapping.business_name, result.counters_text())
    elif result.stopped:
        logger.warning(
            "%s Sync stopped for %s: %s (%s)", LOG_PREFIX, mapping.business_name, result.error, result.counters_text()
        )
    else:
        logger.error(
            "%s Sync failed for %s: %s (so far: %s; watermark unchanged)",
            LOG_PREFIX,
            mapping.business_name,
            result.error,
            result.counters_text(),
        )
    return result


def log_start(
    mapping: SabitoMapping, *, full_sync: bool, updated_after: datetime | None, resume: Resume | None
) -> None:
    if full_sync:
        kind = "full"
    elif updated_after is None:
        kind = "incremental, first sync: fetching everything"
    else:
        kind = f"incremental, updated after {format_timestamp(updated_after)}"
    if resume is not None:
        kind += f", resumed at offset {resume.checkpoint['offset']}"
    logger.info(
        "%s Starting sync for business: %s (%s) [%s]",
        LOG_PREFIX,
        mapping.business_name,
        mapping.sabito_business_id,
        kind,
    )


def stop(result: SyncResult, *, run: SyncRun, reason: str) -> None:
    """The run was asked to stop and did, after the batch it was writing."""
    offset = run.checkpoint["offset"] if run.checkpoint else 0
    if reason == RunPulse.SHUTDOWN:
        result.stopped = SyncRun.Status.INTERRUPTED
        result.error = (
            f"Interrupted: its worker was shutting down; stopped after {run.pages_done} pages (offset {offset}). "
            "The reaper queues it again, to resume there."
        )
    else:
        result.stopped = SyncRun.Status.CANCELLED
        result.error = (
            f"Cancelled on request after {run.pages_done} pages (offset {offset}); what was written stays, "
            "the watermark did not move."
        )


def mark_missing_or_fail(
    *, mapping: SabitoMapping, result: SyncResult, seen_ids: set[str], chain: dict[str, Any], watermark: datetime
) -> datetime | None:
    """After a successful full sync: the missing-marks, and the watermark to store
    (None if marking failed: then the run fails, as any step that did not finish)."""
    if chain["resumed"]:
        # Only a sync that saw every page itself can tell who is gone.
        logger.info("%s Missing-marks skipped for %s: this full sync was resumed", LOG_PREFIX, mapping.business_name)
        return watermark
    try:
        result.marked_missing = mark_missing_customers(mapping=mapping, returned_ids=seen_ids)
    except Exception as exc:
        logger.exception("%s Could not mark missing customers of %s", LOG_PREFIX, mapping.business_name)
        result.success, result.error = False, f"Could not mark the customers Sabito no longer has: {exc}"
        result.retryable = isinstance(exc, DatabaseError)
        return None
    return watermark


def stopped_from_outside(result: SyncResult, *, run: SyncRun, exc: BaseException) -> None:
    """The run was stopped without being asked first: a Ctrl-C at a console cancels it
    (nobody wants it to come back by itself); its process being made to exit (a
    worker's pool process stopped for good) interrupts it, and the reaper queues it
    again to resume from its last written batch."""
    result.success = False
    if isinstance(exc, KeyboardInterrupt):
        result.stopped = SyncRun.Status.CANCELLED
        result.error = (
            f"Cancelled: interrupted at the console after {run.pages_done} pages; what was written stays, "
            "the watermark did not move."
        )
    else:
        result.stopped = SyncRun.Status.INTERRUPTED
        result.error = (
            f"Interrupted: its process was stopped ({exc.__class__.__name__}) after {run.pages_done} pages. "
            "The reaper queues it again, to resume after the last batch written."
        )


def sync_all_mappings(
    *,
    full_sync: bool = False,
    trigger: str = SyncRun.Trigger.CLI,
    mappings: Iterable[SabitoMapping] | None = None,
    client: SabitoClient | None = None,
) -> list[SyncResult]:
    """Sync every given (default: every active) mapping in turn; one failing mapping
    never stops the others."""
    if mappings is None:
        mappings = SabitoMapping.objects.active().select_related("tenant")
    results = []
    for mapping in fan_out(logger, lambda: list(mappings)):
        try:
            results.append(sync_mapping(mapping=mapping, full_sync=full_sync, trigger=trigger, client=client))
        except SyncAlreadyRunning as exc:
            logger.warning("%s %s", LOG_PREFIX, exc)
            results.append(already_running_result(exc))
    log_all_completed(results)
    return results


def log_all_completed(results: list[SyncResult]) -> None:
    logs.log_all_completed(
        logger,
        total_tenants=len(results),
        created=sum(r.created for r in results),
        updated=sum(r.updated for r in results),
        errors=sum(r.errors + (0 if r.success else 1) for r in results),
    )


def sabito_client(settings: SabitoSettings | None = None) -> SabitoClient:
    """A client for the configured Sabito API."""
    settings = settings or load_sabito_settings()
    return SabitoClient(
        base_url=settings.api_url,
        api_key=settings.api_key,
        page_size=settings.page_size,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_retries=settings.max_retries,
        retry_backoff=settings.retry_backoff,
        max_response_bytes=settings.max_response_bytes,
    )
