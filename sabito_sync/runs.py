"""A sync run's bookkeeping: its result, the per-mapping lock, and its recorded outcome.

A run is a `SyncRun` row. Inserting it with status `running` takes the mapping's lock
(a partial unique constraint allows one running run per mapping); its heartbeat says
the worker is alive; its end stores the counters, the mapping's summary and, after a
complete and successful run, the new watermark.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from . import metadata, run_sql
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


def open_run(
    *,
    mapping: SabitoMapping,
    full_sync: bool,
    trigger: str,
    settings: SabitoSettings,
    queued_run: SyncRun | None = None,
    worker: str = "",
) -> tuple[SyncRun, Resume | None]:
    """Start the mapping's next run (as `queued_run`, if the caller queued one): where
    its latest run stopped unfinished recently, carry on from there (`find_resume`),
    otherwise a sync of the kind asked for from the mapping's watermark. Returns the
    running run and the resume it carries on, if any; raises `SyncAlreadyRunning` and
    `RunNotQueued` as `start_run` does."""
    if queued_run is None and connection.vendor == "postgresql":
        return open_run_in_one_statement(
            mapping=mapping, full_sync=full_sync, trigger=trigger, settings=settings, worker=worker
        )
    resume = find_resume(mapping=mapping, full_sync=full_sync, settings=settings)
    run = start_run(
        mapping=mapping,
        trigger=trigger,
        settings=settings,
        queued_run=queued_run,
        worker=worker,
        **run_kind(mapping=mapping, full_sync=full_sync, resume=resume),
    )
    return run, resume


def run_kind(*, mapping: SabitoMapping, full_sync: bool, resume: Resume | None) -> dict:
    """What a new run is: the kind of sync, its `updatedAfter`, its note and the
    checkpoint it starts from."""
    if resume is not None:
        return {
            "full_sync": resume.full_sync,
            "updated_after": resume.updated_after,
            "note": resume.note,
            "checkpoint": resume.checkpoint,
        }
    updated_after = None if full_sync else mapping.last_synced_at
    note = mapping.watermark_reset_reason if updated_after is None else ""
    return {"full_sync": full_sync, "updated_after": updated_after, "note": note, "checkpoint": None}


def open_run_in_one_statement(
    *, mapping: SabitoMapping, full_sync: bool, trigger: str, settings: SabitoSettings, worker: str
) -> tuple[SyncRun, Resume | None]:
    """`open_run` on PostgreSQL: the insert that takes the lock also reads the latest
    run (`run_sql`), so a run that resumes nothing costs one statement. The run is
    inserted as a fresh sync; the rare one that resumes is then given the resumed
    sync's kind and checkpoint before it fetches anything."""
    stale_before = stale_heartbeat_cutoff(settings)
    for _attempt in range(3):
        now = timezone.now()
        run = SyncRun(
            mapping=mapping,
            trigger=trigger,
            status=SyncRun.Status.RUNNING,
            started_at=now,
            heartbeat_at=now,
            worker=worker,
            **run_kind(mapping=mapping, full_sync=full_sync, resume=None),
        )
        inserted, latest = run_sql.insert_running_run(run)
        if inserted:
            run._state.adding, run._state.db = False, connection.alias
            resume = resume_from(latest, mapping=mapping, full_sync=full_sync, settings=settings)
            if resume is not None:
                for name, value in run_kind(mapping=mapping, full_sync=full_sync, resume=resume).items():
                    setattr(run, name, value)
                run.save(update_fields=["full_sync", "updated_after", "note", "checkpoint"])
            return run, resume
        contend(mapping=mapping, full_sync=full_sync, trigger=trigger, stale_before=stale_before, now=now)
    holder = SyncRun.objects.filter(mapping=mapping, status=SyncRun.Status.RUNNING).first()
    raise SyncAlreadyRunning(mapping, holder)


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
            contend(
                mapping=mapping, full_sync=full_sync, trigger=trigger, stale_before=stale_before, now=now, queued_run=queued_run
            )
    holder = SyncRun.objects.filter(mapping=mapping, status=SyncRun.Status.RUNNING).first()
    raise SyncAlreadyRunning(mapping, holder)


def contend(
    *,
    mapping: SabitoMapping,
    full_sync: bool,
    trigger: str,
    stale_before: datetime,
    now: datetime,
    queued_run: SyncRun | None = None,
) -> None:
    """Another run held the mapping when this one tried to start: raise
    `SyncAlreadyRunning` (recorded) if it is alive; if it is stale, take it over, and
    if it has finished meanwhile, return for the caller to try again."""
    holder = SyncRun.objects.filter(mapping=mapping, status=SyncRun.Status.RUNNING).first()
    if holder is None:
        return  # it finished between our write and our look
    if holder.heartbeat_at >= stale_before:
        record_already_running(mapping=mapping, full_sync=full_sync, trigger=trigger, holder=holder, queued_run=queued_run)
        raise SyncAlreadyRunning(mapping, holder) from None
    take_over(mapping=mapping, holder=holder, now=now)


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


# --- Resuming: where an unfinished run stopped ------------------------------------------------


@dataclass(frozen=True)
class Resume:
    """Where a new run carries on from an unfinished one: the same kind of sync with
    the same `updatedAfter`, from the checkpoint of its last committed page."""

    from_run: SyncRun
    full_sync: bool
    updated_after: datetime | None
    checkpoint: dict

    @property
    def note(self) -> str:
        return (
            f"Resumed from run {self.from_run.pk} ({self.from_run.status}) at offset {self.checkpoint['offset']} "
            f"of the same {'full' if self.full_sync else 'incremental'} sync."
        )


# A run in one of these may have left work to carry on from.
UNFINISHED_STATUSES = (SyncRun.Status.FAILED, SyncRun.Status.CANCELLED, SyncRun.Status.INTERRUPTED)


def find_resume(*, mapping: SabitoMapping, full_sync: bool, settings: SabitoSettings) -> Resume | None:
    """The checkpoint a sync of `mapping` resumes from, if its latest run stopped
    unfinished (failed, died, cancelled, interrupted) recently enough and read the
    business and tenant the mapping still maps. A full sync asked for does not carry
    on an incremental one (it wants more); an incremental one carries on either."""
    if not settings.resume_within_seconds:
        return None
    latest = (
        SyncRun.objects.filter(mapping=mapping)
        .exclude(status__in=[SyncRun.Status.QUEUED, SyncRun.Status.ALREADY_RUNNING])
        .order_by("-started_at")
        .first()
    )
    return resume_from(latest, mapping=mapping, full_sync=full_sync, settings=settings)


def resume_from(
    latest: SyncRun | None, *, mapping: SabitoMapping, full_sync: bool, settings: SabitoSettings
) -> Resume | None:
    """`find_resume`'s verdict on `latest`, the mapping's latest run that was not
    queued or refused."""
    if not settings.resume_within_seconds:
        return None
    if latest is None or not isinstance(latest.checkpoint, dict):
        return None
    dead = latest.status == SyncRun.Status.RUNNING and latest.heartbeat_at < stale_heartbeat_cutoff(settings)
    ended = latest.finished_at or latest.heartbeat_at
    checkpoint = latest.checkpoint
    if not (latest.status in UNFINISHED_STATUSES or dead):
        return None
    if ended < timezone.now() - timedelta(seconds=settings.resume_within_seconds):
        return None
    if (checkpoint.get("businessId"), checkpoint.get("tenantId")) != (mapping.sabito_business_id, str(mapping.tenant_id)):
        return None
    if full_sync and not checkpoint.get("fullSync"):
        return None
    updated_after = checkpoint.get("updatedAfter")
    return Resume(
        from_run=latest,
        full_sync=bool(checkpoint.get("fullSync")),
        updated_after=datetime.fromisoformat(updated_after) if updated_after else None,
        checkpoint=checkpoint,
    )


def chain_checkpoint(
    *, mapping: SabitoMapping, full_sync: bool, updated_after: datetime | None, chain_started_at: datetime, resumed: bool
) -> dict:
    """What every checkpoint of one logical sync (resumed or not) carries besides the
    feed position: enough to tell whether a later run may carry it on."""
    return {
        "businessId": mapping.sabito_business_id,
        "tenantId": str(mapping.tenant_id),
        "fullSync": full_sync,
        "updatedAfter": updated_after.isoformat() if updated_after else None,
        "chainStartedAt": chain_started_at.isoformat(),
        # A resumed full sync has not seen the pages before its checkpoint itself.
        "resumed": resumed,
    }


# --- Alive: the heartbeat, and being asked to stop --------------------------------------------


class RunPulse:
    """The run's proof of life, from a thread of its own: every `interval` seconds it
    touches the heartbeat, whatever the sync is waiting on (a slow Sabito page, a
    long write), so a dead worker shows within SABITO_STALE_RUN_AFTER rather than
    after the slowest page. It also reads whether the run was asked to stop (a
    cancel, its worker shutting down) or is no longer ours (taken over as stale);
    the sync looks at `stop_reason` between pages.

    The thread is the process's `Heartbeats`, shared by every run the process makes
    in turn (or at once): a run that ends before its first beat, as one finding
    nothing new does, costs no thread start."""

    CANCEL, SHUTDOWN, TAKEN_OVER = "cancel", "shutdown", "taken_over"

    def __init__(self, run: SyncRun, *, interval: float):
        self.run_id = run.pk
        self.interval = interval
        self.stop_reason: str | None = None

    def __enter__(self) -> RunPulse:
        Heartbeats.of_this_process().add(self)
        return self

    def __exit__(self, *exc_info) -> None:
        Heartbeats.of_this_process().remove(self)

    def beat_once(self) -> None:
        running = SyncRun.objects.filter(pk=self.run_id, status=SyncRun.Status.RUNNING)
        if not running.update(heartbeat_at=timezone.now()):
            # Not running any more (taken over as stale); a row this connection cannot
            # see at all is one not committed yet, and says nothing.
            if SyncRun.objects.filter(pk=self.run_id).exists():
                self.stop_reason = self.TAKEN_OVER
            return
        requested_at, reason = running.values_list("cancel_requested_at", "stop_reason").first() or (None, "")
        if requested_at is not None:
            self.stop_reason = self.SHUTDOWN if reason == self.SHUTDOWN else self.CANCEL


class Heartbeats:
    """One daemon thread per process that beats for each of the process's live
    `RunPulse`s when it is due, on a database connection of its own (closed whenever
    no run is live, as a thread per run closed its own). Made in the process that
    uses it: a worker's pool processes each get their own after the fork."""

    _current: Heartbeats | None = None
    _current_lock = threading.Lock()

    @classmethod
    def of_this_process(cls) -> Heartbeats:
        with cls._current_lock:
            if cls._current is None or cls._current.pid != os.getpid():
                cls._current = cls()
            return cls._current

    def __init__(self):
        self.pid = os.getpid()
        self._due: dict[RunPulse, float] = {}  # pulse → when it next beats (monotonic)
        self._changed = threading.Condition()
        self._beating: RunPulse | None = None
        self._thread: threading.Thread | None = None

    def add(self, pulse: RunPulse) -> None:
        with self._changed:
            self._due[pulse] = time.monotonic() + pulse.interval
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sabito-heartbeat", daemon=True)
                self._thread.start()
            self._changed.notify()

    def remove(self, pulse: RunPulse) -> None:
        """Forget `pulse`; once this returns its run is not touched again."""
        with self._changed:
            self._due.pop(pulse, None)
            while self._beating is pulse:
                self._changed.wait()

    def _run(self) -> None:
        connected = False
        while True:
            with self._changed:
                pulse = self._next_due(connection_open=connected)
            if pulse is None:
                connection.close()  # no live run: give the connection back until one starts
                connected = False
                continue
            connected = True
            try:
                pulse.beat_once()
            except DatabaseError as exc:
                # SQLite busy with the page being written, or a blip: the next beat
                # tries again, and only a run of missed beats makes the run look dead.
                logger.warning("%s Heartbeat of run %s missed: %s", LOG_PREFIX, pulse.run_id, exc)
                connection.close()
            except Exception:  # the thread beats for every run of the process: it must go on
                logger.exception("%s Heartbeat of run %s failed", LOG_PREFIX, pulse.run_id)
            finally:
                with self._changed:
                    self._beating = None
                    self._changed.notify_all()

    def _next_due(self, *, connection_open: bool) -> RunPulse | None:
        """Wait, holding the condition, for the next pulse due and mark it beating;
        None when there is no live run and the connection is to be closed."""
        while True:
            if not self._due:
                if connection_open:
                    return None
                self._changed.wait()
                continue
            pulse, due = min(self._due.items(), key=lambda item: item[1])
            delay = due - time.monotonic()
            if delay <= 0:
                self._due[pulse] = time.monotonic() + pulse.interval
                self._beating = pulse
                return pulse
            self._changed.wait(delay)


# An interrupted run's `stop_reason` once the reaper has queued its sync again.
QUEUED_AGAIN = "queued_again"


def request_stop_of_worker_runs(*, worker: str) -> int:
    """Ask every run of `worker` (a Celery node name) to stop after its page, as
    interrupted: the worker is shutting down. Returns how many were asked."""
    return SyncRun.objects.filter(status=SyncRun.Status.RUNNING, worker=worker, cancel_requested_at=None).update(
        cancel_requested_at=timezone.now(), stop_reason=RunPulse.SHUTDOWN
    )


def reap_dead_runs(*, settings: SabitoSettings) -> list[SyncRun]:
    """Finish as failed every running run whose heartbeat went stale (its worker
    died: SIGKILL, out of memory, a lost host), and take up every run a worker's
    shutdown interrupted; returns them, for their syncs to be queued again (they
    resume from their checkpoints). Each is taken up once, by one reaper."""
    now, reaped = timezone.now(), []
    for run in SyncRun.objects.filter(status=SyncRun.Status.INTERRUPTED, stop_reason=RunPulse.SHUTDOWN):
        if SyncRun.objects.filter(pk=run.pk, stop_reason=RunPulse.SHUTDOWN).update(stop_reason=QUEUED_AGAIN):
            reaped.append(run)
    for run in SyncRun.objects.filter(status=SyncRun.Status.RUNNING, heartbeat_at__lt=stale_heartbeat_cutoff(settings)):
        # Conditional on the heartbeat seen, so a run that just came back to life
        # (or another reaper) is left alone.
        if SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING, heartbeat_at=run.heartbeat_at).update(
            status=SyncRun.Status.FAILED,
            finished_at=now,
            error_message=(
                f"Abandoned: no heartbeat since {run.heartbeat_at.isoformat()} (its worker died); "
                "the watermark was not moved and the sync was queued again."
            ),
        ):
            reaped.append(run)
    return reaped


# --- Finishing: the outcome -------------------------------------------------------------------


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
    status = SyncRun.Status.SUCCEEDED if result.success else (result.stopped or SyncRun.Status.FAILED)
    values = {
        "status": status,
        "finished_at": finished_at,
        "heartbeat_at": finished_at,
        **run_counters(result),
        "error_message": result.error or "",
    }
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
        still_ours = SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).update(**values)
        if not still_ours:
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
