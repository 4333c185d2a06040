"""Starting a run: the per-mapping lock.

Inserting a `SyncRun` with status `running` takes its mapping's lock (a partial
unique constraint allows one running run per mapping, across processes and hosts);
a holder whose heartbeat went stale belonged to a worker that died and is taken over.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from ..conf import SabitoSettings
from ..logs import LOG_PREFIX
from ..models import SabitoMapping, SyncRun
from . import sql
from .queries import running_run_of, stale_heartbeat_cutoff
from .reaper import abandon
from .result import RunNotQueued, SyncAlreadyRunning
from .resume import Resume, find_resume, resume_from

logger = logging.getLogger("sabito_sync.sync")


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
    for _attempt in range(2):
        if queued_run is not None:
            # A trigger may have upgraded the queued run to a full sync since its task was
            # sent: the row as the caller read it says so, or the claim finds it
            # (`QueuedRunUpgraded`, with `queued_run` read again).
            full_sync = full_sync or queued_run.full_sync
        try:
            return start_kind_of_run(
                mapping=mapping,
                full_sync=full_sync,
                trigger=trigger,
                settings=settings,
                queued_run=queued_run,
                worker=worker,
            )
        except QueuedRunUpgraded:
            continue
    # Only a claim retries, and only once: an upgrade to full never goes back.
    assert queued_run is not None
    raise RunNotQueued(queued_run)


def start_kind_of_run(
    *,
    mapping: SabitoMapping,
    full_sync: bool,
    trigger: str,
    settings: SabitoSettings,
    queued_run: SyncRun | None,
    worker: str,
) -> tuple[SyncRun, Resume | None]:
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


def run_kind(*, mapping: SabitoMapping, full_sync: bool, resume: Resume | None) -> dict[str, Any]:
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
    run (`runs.sql`), so a run that resumes nothing costs one statement. The run is
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
        inserted, latest = sql.insert_running_run(run)
        if inserted:
            run._state.adding, run._state.db = False, connection.alias
            resume = resume_from(latest, mapping=mapping, full_sync=full_sync, settings=settings)
            if resume is not None:
                for name, value in run_kind(mapping=mapping, full_sync=full_sync, resume=resume).items():
                    setattr(run, name, value)
                run.save(update_fields=["full_sync", "updated_after", "note", "checkpoint"])
            return run, resume
        contend(mapping=mapping, full_sync=full_sync, trigger=trigger, stale_before=stale_before, now=now)
    holder = running_run_of(mapping)
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
    checkpoint: dict[str, Any] | None = None,
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
                        mapping=mapping,
                        full_sync=full_sync,
                        trigger=trigger,
                        status=SyncRun.Status.RUNNING,
                        now=now,
                        **fields,
                    )
                return claim_queued_run(queued_run, full_sync=full_sync, now=now, **fields)
        except IntegrityError:
            contend(
                mapping=mapping,
                full_sync=full_sync,
                trigger=trigger,
                stale_before=stale_before,
                now=now,
                queued_run=queued_run,
            )
    holder = running_run_of(mapping)
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
    holder = running_run_of(mapping)
    if holder is None:
        return  # it finished between our write and our look
    if holder.heartbeat_at >= stale_before:
        record_already_running(
            mapping=mapping, full_sync=full_sync, trigger=trigger, holder=holder, queued_run=queued_run
        )
        raise SyncAlreadyRunning(mapping, holder) from None
    take_over(mapping=mapping, holder=holder, now=now)


class QueuedRunUpgraded(Exception):
    """The queued run became a full sync while this worker was claiming it as an
    incremental one: claim it again, as what it now is."""


def claim_queued_run(queued_run: SyncRun, *, full_sync: bool, now: datetime, **fields: Any) -> SyncRun:
    # An incremental claim only of a run still incremental: an upgrade to full made
    # meanwhile (`services.syncs.request_sync`) must not be written over.
    still = {} if full_sync else {"full_sync": False}
    claimed = SyncRun.objects.filter(pk=queued_run.pk, status=SyncRun.Status.QUEUED, **still).update(
        status=SyncRun.Status.RUNNING, full_sync=full_sync, started_at=now, heartbeat_at=now, **fields
    )
    queued_run.refresh_from_db()
    if not claimed:
        if queued_run.status == SyncRun.Status.QUEUED:
            raise QueuedRunUpgraded()
        raise RunNotQueued(queued_run)
    return queued_run


def create_run(
    *, mapping: SabitoMapping, full_sync: bool, trigger: str, status: str, now: datetime, **fields: Any
) -> SyncRun:
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
    create_run(
        mapping=mapping,
        full_sync=full_sync,
        trigger=trigger,
        status=status,
        now=now,
        finished_at=now,
        error_message=why,
    )


def take_over(*, mapping: SabitoMapping, holder: SyncRun, now: datetime) -> None:
    logger.warning(
        "%s Taking over stale run %s of %s: no progress since %s",
        LOG_PREFIX,
        holder.pk,
        mapping.business_name,
        holder.heartbeat_at.isoformat(),
    )
    # Conditional on the heartbeat we saw, so two contenders cannot both win.
    abandon(holder, now=now, afterwards="this run took the mapping over")
