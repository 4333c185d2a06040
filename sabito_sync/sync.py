"""The Sabito sync: one mapping's sync, and every mapping's in turn.

For one mapping a sync reads top to bottom: open a `SyncRun` (the per-mapping lock,
`runs`), fetch Sabito's customers page by page (`prefetch`, over the `client`),
validate each record (`records`), match it to a customer of the mapping's tenant and
write the page in one transaction (`page_writer`, over `page_sql`), and finally
record the result and, only if every page was fetched and written, move the
incremental watermark (`runs`).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Callable, Iterable

from django.db import DatabaseError

from .client import SabitoClient, SabitoError, format_timestamp
from .conf import SabitoSettings, load_sabito_settings
from .logs import LOG_PREFIX, fan_out
from .models import SabitoMapping, SyncRun
from .page_writer import mark_missing_customers, write_page
from .prefetch import prefetched_pages
from .runs import (
    RunTakenOver,
    SyncAlreadyRunning,
    SyncResult,
    already_running_result,
    finish_run,
    start_run,
)

# What the interfaces (API, tasks, command, admin) use of the sync: the service, its
# result and its refusal, wherever in the engine they are defined.
__all__ = [
    "SyncAlreadyRunning",
    "SyncResult",
    "already_running_result",
    "sabito_client",
    "sync_all_mappings",
    "sync_mapping",
]

logger = logging.getLogger("sabito_sync.sync")


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
    one. Raises `SyncAlreadyRunning` if another run holds the mapping and
    `RunNotQueued` if `queued_run` is no longer waiting; every other failure is
    reported in the returned result."""
    settings = load_sabito_settings()
    updated_after = None if full_sync else mapping.last_synced_at
    run = start_run(
        mapping=mapping,
        full_sync=full_sync,
        trigger=trigger,
        updated_after=updated_after,
        settings=settings,
        note=mapping.watermark_reset_reason if updated_after is None else "",
        queued_run=queued_run,
        worker=worker,
    )
    result = SyncResult(business_id=mapping.sabito_business_id, business_name=mapping.business_name, run_id=str(run.pk))
    if full_sync:
        kind = "full"
    elif updated_after is None:
        kind = "incremental, first sync: fetching everything"
    else:
        kind = f"incremental, updated after {format_timestamp(updated_after)}"
    logger.info(
        "%s Starting sync for business: %s (%s) [%s]", LOG_PREFIX, mapping.business_name, mapping.sabito_business_id, kind
    )

    own_client = client is None
    client = client or sabito_client(settings)
    seen_ids: set[str] = set()
    try:
        with prefetched_pages(client, business_id=mapping.sabito_business_id, updated_after=updated_after) as pages:
            for page in pages:
                logger.info("%s Found %d customers to sync (offset %d)", LOG_PREFIX, len(page.validated), page.offset)
                write_page(run=run, mapping=mapping, validated=page.validated, seen_ids=seen_ids, result=result)
                if on_page is not None:
                    on_page(result)
    except SabitoError as exc:
        result.error, result.retryable = str(exc), exc.retryable
    except RunTakenOver:
        result.error = "This run stopped making progress and was taken over by another run."
    except DatabaseError as exc:
        result.error, result.retryable = f"Database error: {exc}", True
    except Exception as exc:  # a bug must not leave the run "running" forever
        logger.exception("%s Unexpected error while syncing %s", LOG_PREFIX, mapping.business_name)
        result.error = f"Unexpected error: {exc.__class__.__name__}: {exc}"
    except BaseException:
        # Interrupted (Ctrl-C, worker shutdown): record it, keep the watermark, re-raise.
        finish_run(run=run, mapping=mapping, result=_failed(result, "Interrupted before completion."), watermark=None)
        raise
    finally:
        if own_client:
            client.close()

    if result.error is None:
        result.success = True
        watermark = run.started_at - timedelta(seconds=settings.overlap_seconds)
        if full_sync:
            result.marked_missing = mark_missing_customers(mapping=mapping, returned_ids=seen_ids)
    else:
        watermark = None
    finish_run(run=run, mapping=mapping, result=result, watermark=watermark)

    if result.success:
        logger.info("%s Sync completed for %s: %s", LOG_PREFIX, mapping.business_name, result.counters_text())
    else:
        logger.error(
            "%s Sync failed for %s: %s (so far: %s; watermark unchanged)",
            LOG_PREFIX,
            mapping.business_name,
            result.error,
            result.counters_text(),
        )
    return result


def _failed(result: SyncResult, error: str) -> SyncResult:
    result.success, result.error = False, error
    return result


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
        mappings = SabitoMapping.objects.filter(is_active=True).select_related("tenant")
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
    logger.info(
        "%s All tenants sync completed: { totalTenants: %d, totalCreated: %d, totalUpdated: %d, totalErrors: %d }",
        LOG_PREFIX,
        len(results),
        sum(r.created for r in results),
        sum(r.updated for r in results),
        sum(r.errors + (0 if r.success else 1) for r in results),
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
    )
