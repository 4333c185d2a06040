"""A sync run's bookkeeping: its result, the per-mapping lock, and its recorded outcome.

A run is a `SyncRun` row. Inserting it with status `running` takes the mapping's lock
(a partial unique constraint allows one running run per mapping); its heartbeat says
the worker is alive; its end stores the counters, the mapping's summary and, after a
complete and successful run, the new watermark.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from . import metadata
from .client import format_timestamp
from .conf import SabitoSettings
from .logs import LOG_PREFIX
from .models import SabitoMapping, SyncRun

logger = logging.getLogger("sabito_sync.sync")

# A run keeps every error in its counters but stores the details of the first
# ones only, so a feed of garbage cannot grow one row without bound.
MAX_STORED_ERROR_DETAILS = 1000


@dataclass
class SyncResult:
    """What one mapping's sync did, as plain data: the interfaces render it (the API's
    serializers, the task's return value, the command's report), the run stores it."""

    business_id: str
    business_name: str
    success: bool = False
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: int = 0
    marked_missing: int = 0
    error_details: list[dict] = field(default_factory=list)
    error: str | None = None
    # Whether trying again later may help (HTTP trouble, lost database connection),
    # as opposed to a rejected key or a lock held by another run.
    retryable: bool = False
    already_running: bool = False
    # Why a run that did not fail stopped before the end: SyncRun.Status.CANCELLED
    # (on request) or INTERRUPTED (its worker was shutting down); None otherwise.
    stopped: str | None = None
    # The run this result is of (None for a sync refused before it had one).
    run_id: str | None = None

    @property
    def processed(self) -> int:
        """Every record the sync dealt with, whatever became of it."""
        return self.created + self.updated + self.skipped + self.errors

    def counters_text(self) -> str:
        return (
            f"{{ processed: {self.processed}, created: {self.created}, updated: {self.updated}, "
            f"skipped: {self.skipped}, errors: {self.errors} }}"
        )

    def add_error(self, detail: dict) -> None:
        self.errors += 1
        if len(self.error_details) < MAX_STORED_ERROR_DETAILS:
            self.error_details.append(detail)


def run_counters(result: SyncResult) -> dict:
    """The result's counters as the `SyncRun` fields that keep them."""
    return {
        "customers_processed": result.processed,
        "created": result.created,
        "updated": result.updated,
        "skipped": result.skipped,
        "errors": result.errors,
        "marked_missing": result.marked_missing,
        "error_details": result.error_details,
    }


class SyncAlreadyRunning(Exception):
    def __init__(self, mapping: SabitoMapping, running_run: SyncRun | None):
        self.mapping = mapping
        self.running_run = running_run
        since = f" since {running_run.started_at:%Y-%m-%d %H:%M:%S} UTC" if running_run else ""
        super().__init__(f"A sync is already running for {mapping.business_name}{since}")


class RunTakenOver(Exception):
    """This run was declared stale and taken over by another worker: stop writing."""


class RunNotQueued(Exception):
    """The queued run this task was to start is no longer queued: it was cancelled
    before a worker took it, or a redelivered task finds it already done."""

    def __init__(self, run: SyncRun):
        self.run = run
        super().__init__(f"Run {run.pk} is {run.status}, not queued; nothing to start")


def already_running_result(exc: SyncAlreadyRunning) -> SyncResult:
    return SyncResult(
        business_id=exc.mapping.sabito_business_id,
        business_name=exc.mapping.business_name,
        error=str(exc),
        already_running=True,
    )


# --- Starting: the lock ---------------------------------------------------------------------


def stale_heartbeat_cutoff(settings: SabitoSettings) -> datetime:
    """A running run whose heartbeat is older than this belongs to a worker that
    died: it no longer holds its mapping, and the next sync takes it over."""
    return timezone.now() - timedelta(seconds=settings.stale_run_after_seconds)


def start_run(
    *,
    mapping: SabitoMapping,
    full_sync: bool,
    trigger: str,
    updated_after: datetime | None,
    settings: SabitoSettings,
    note: str = "",
    queued_run: SyncRun | None = None,
    worker: str = "",
    checkpoint: dict | None = None,
) -> SyncRun:
    """Make the mapping's running `SyncRun`: insert it, or turn `queued_run` (the row
    an interface made when it queued the task) into it. The partial unique constraint
    on running runs is the lock: the write fails while another run holds the mapping,
    whichever process or host it runs on. A holder whose heartbeat is older than the
    stale limit belonged to a worker that died; it is marked failed and taken over."""
    stale_before = stale_heartbeat_cutoff(settings)
    fields = {"updated_after": updated_after, "note": note, "worker": worker, "checkpoint": checkpoint}
    for _attempt in range(3):
        now = timezone.now()
        try:
            with transaction.atomic():
                if queued_run is None:
                    return create_run(
                        mapping=mapping, full_sync=full_sync, trigger=trigger, status=SyncRun.Status.RUNNING, now=now, **fields
                    )
                return claim_queued_run(queued_run, full_sync=full_sync, now=now, **fields)
        except IntegrityError:
            holder = SyncRun.objects.filter(mapping=mapping, status=SyncRun.Status.RUNNING).first()
            if holder is None:
                continue  # it finished between our write and our look
            if holder.heartbeat_at >= stale_before:
                record_already_running(
                    mapping=mapping, full_sync=full_sync, trigger=trigger, holder=holder, queued_run=queued_run
                )
                raise SyncAlreadyRunning(mapping, holder) from None
            take_over(mapping=mapping, holder=holder, now=now)
    holder = SyncRun.objects.filter(mapping=mapping, status=SyncRun.Status.RUNNING).first()
    raise SyncAlreadyRunning(mapping, holder)


def claim_queued_run(queued_run: SyncRun, *, full_sync: bool, now: datetime, **fields) -> SyncRun:
    claimed = SyncRun.objects.filter(pk=queued_run.pk, status=SyncRun.Status.QUEUED).update(
        status=SyncRun.Status.RUNNING, full_sync=full_sync, started_at=now, heartbeat_at=now, **fields
    )
    queued_run.refresh_from_db()
    if not claimed:
        raise RunNotQueued(queued_run)
    return queued_run


def create_run(*, mapping: SabitoMapping, full_sync: bool, trigger: str, status: str, now: datetime, **fields) -> SyncRun:
    return SyncRun.objects.create(
        mapping=mapping, full_sync=full_sync, trigger=trigger, status=status, started_at=now, heartbeat_at=now, **fields
    )


def record_already_running(
    *, mapping: SabitoMapping, full_sync: bool, trigger: str, holder: SyncRun, queued_run: SyncRun | None = None
) -> None:
    now, status = timezone.now(), SyncRun.Status.ALREADY_RUNNING
    why = f"Not started: run {holder.pk} has held this mapping since {holder.started_at.isoformat()}."
    if queued_run is not None:
        SyncRun.objects.filter(pk=queued_run.pk, status=SyncRun.Status.QUEUED).update(
            status=status, started_at=now, finished_at=now, heartbeat_at=now, error_message=why
        )
        return
    create_run(mapping=mapping, full_sync=full_sync, trigger=trigger, status=status, now=now, finished_at=now, error_message=why)


def take_over(*, mapping: SabitoMapping, holder: SyncRun, now: datetime) -> None:
    logger.warning(
        "%s Taking over stale run %s of %s: no progress since %s",
        LOG_PREFIX,
        holder.pk,
        mapping.business_name,
        holder.heartbeat_at.isoformat(),
    )
    # Conditional on the heartbeat we saw, so two contenders cannot both win.
    SyncRun.objects.filter(pk=holder.pk, status=SyncRun.Status.RUNNING, heartbeat_at=holder.heartbeat_at).update(
        status=SyncRun.Status.FAILED,
        finished_at=now,
        error_message=(
            f"Abandoned: no progress since {holder.heartbeat_at.isoformat()} "
            "(the worker probably died); the watermark was not moved."
        ),
    )


# --- Finishing: the outcome -------------------------------------------------------------------


def finish_run(*, run: SyncRun, mapping: SabitoMapping, result: SyncResult, watermark: datetime | None) -> None:
    """Store the run's outcome and the mapping's summary; move the watermark only
    when given one (a complete, successful run). If this run was taken over as
    stale meanwhile, nothing is written: the other run owns the mapping now."""
    for attempt in (1, 2):
        try:
            record_outcome(run=run, mapping=mapping, result=result, watermark=watermark)
            return
        except DatabaseError:
            if attempt == 2 or connection.in_atomic_block:
                # Still gone: the run stays "running" until its heartbeat goes
                # stale and the next run takes it over; the watermark never moved.
                logger.exception("%s Could not record the outcome of run %s", LOG_PREFIX, run.pk)
                return
            # A dropped connection (that may be why the sync failed) is dead for
            # good in this process: open a fresh one and try once more.
            logger.warning("%s Reconnecting to the database to record run %s", LOG_PREFIX, run.pk)
            connection.close()


def record_outcome(*, run: SyncRun, mapping: SabitoMapping, result: SyncResult, watermark: datetime | None) -> None:
    finished_at = timezone.now()
    status = SyncRun.Status.SUCCEEDED if result.success else (result.stopped or SyncRun.Status.FAILED)
    with transaction.atomic():
        still_ours = SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).update(
            status=status,
            finished_at=finished_at,
            heartbeat_at=finished_at,
            **run_counters(result),
            error_message=result.error or "",
        )
        if not still_ours:
            logger.warning("%s Run %s was taken over; its outcome is not recorded", LOG_PREFIX, run.pk)
            return
        locked = SabitoMapping.objects.select_for_update().get(pk=mapping.pk)
        # A mapping re-pointed after this run started keeps its reset watermark: this
        # run read the business (or wrote the tenant) it no longer maps.
        if not same_target(locked, mapping):
            watermark = None
        locked.metadata = metadata.with_outcome(
            locked.metadata,
            result=result,
            full_sync=run.full_sync,
            synced_at=format_timestamp(finished_at),
            watermark=format_timestamp(watermark) if watermark is not None else None,
        )
        locked.save(update_fields=["metadata", "updated_at"])
        mapping.metadata = locked.metadata


def same_target(stored: SabitoMapping, synced: SabitoMapping) -> bool:
    return (stored.sabito_business_id, stored.tenant_id) == (synced.sabito_business_id, synced.tenant_id)
