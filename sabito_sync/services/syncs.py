"""Asking for syncs: queueing them on the workers and following them, cancelling a
run, or syncing in this process (the management command).

`trigger_syncs` is the API's sync endpoints' whole decision: what to queue, how long
to wait, and what the answer says; the views only render it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from ..conf import load_sabito_settings
from ..engine.sync import sync_all_mappings, sync_mapping
from ..logs import LOG_PREFIX
from ..models import SabitoMapping, SyncRun
from ..runs.queries import joinable_run_of, live_runs, running_run_of
from ..runs.result import SyncAlreadyRunning, SyncResult, already_running_result, result_of_run
from . import queueing
from .access import Action, Actor, actor_name, ensure_may

logger = logging.getLogger("sabito_sync.mappings")


class RunAlreadyFinished(Exception):
    """The run has ended; there is nothing left to cancel."""


class SyncQueueUnavailable(Exception):
    """The broker refused a sync; `request` says what was done before it did."""

    def __init__(self, message: str, *, request: SyncRequest) -> None:
        super().__init__(message)
        self.request = request


@dataclass(frozen=True)
class QueuedSync:
    mapping: SabitoMapping
    task_id: str | None
    # The run, status `queued` until a worker starts it: what a caller follows.
    run: SyncRun


@dataclass(frozen=True)
class SyncRequest:
    queued: list[QueuedSync] = field(default_factory=list)
    # Not queued: a run of the mapping was queued or running already and does what was
    # asked; the trigger follows that run (its `task_id` is None).
    attached: list[QueuedSync] = field(default_factory=list)
    # Not queued: a full sync asked for while an incremental run of the mapping runs.
    already_running: list[SabitoMapping] = field(default_factory=list)

    @property
    def followed(self) -> list[QueuedSync]:
        """The runs the trigger answers for: those it queued and those it joined."""
        return self.queued + self.attached


def ensure_may_sync(*, actor: Actor, mappings: list[SabitoMapping]) -> None:
    """Syncing is MANAGE in each tenant the mappings belong to, checked once per tenant."""
    for tenant in {mapping.tenant_id: mapping.tenant for mapping in mappings}.values():
        ensure_may(actor, Action.MANAGE, tenant=tenant)


def request_sync(*, actor: Actor, mappings: Iterable[SabitoMapping], full_sync: bool, trigger: str) -> SyncRequest:
    """Queue a sync of every mapping given, one trigger, one run: a mapping with a run
    queued or running already gets no second one, the trigger joins that run
    (`attached`). A full sync asked for while an incremental run is queued makes that
    run a full one; while one is running, it is refused (`already_running`), since
    that run does not fetch every customer.

    The decision is taken with the mappings' rows locked (on SQLite the transaction
    takes the write lock at once), so simultaneous triggers, in any process, decide
    one after the other and the later ones see the run the first queued."""
    mappings = list(mappings)
    ensure_may_sync(actor=actor, mappings=mappings)
    request = SyncRequest()
    to_queue: list[tuple[SabitoMapping, SyncRun]] = []
    with transaction.atomic():
        list(SabitoMapping.objects.select_for_update().filter(pk__in=[m.pk for m in mappings]).order_by("pk"))
        holders = joinable_run_of([mapping.pk for mapping in mappings])
        for mapping in mappings:
            holder = holders.get(str(mapping.pk))
            if holder is not None and full_sync and not holder.full_sync and holder.status == SyncRun.Status.QUEUED:
                # Not yet claimed: it becomes the full sync asked for (a claim in flight
                # takes the upgrade into account, see `runs.lock.claim_queued_run`).
                if SyncRun.objects.filter(pk=holder.pk, status=SyncRun.Status.QUEUED).update(full_sync=True):
                    holder.full_sync = True
                else:
                    holder.refresh_from_db()
                    if holder.status in SyncRun.FINISHED_STATUSES:
                        holder = None  # claimed and finished since we looked: nothing holds it now
            if holder is not None and full_sync and not holder.full_sync:
                request.already_running.append(mapping)
            elif holder is not None:
                request.attached.append(QueuedSync(mapping=mapping, task_id=None, run=holder))
            else:
                now = timezone.now()
                to_queue.append(
                    (
                        mapping,
                        SyncRun.objects.create(
                            mapping=mapping,
                            full_sync=full_sync,
                            trigger=trigger,
                            status=SyncRun.Status.QUEUED,
                            started_at=now,
                            heartbeat_at=now,
                        ),
                    )
                )
    # Sent once the runs are committed (by this block, or by the caller's transaction).
    for position, (mapping, run) in enumerate(to_queue):
        try:
            task_id = queueing.enqueue_mapping_sync(mapping=mapping, full_sync=full_sync, trigger=trigger, run=run)
        except BrokerError as exc:
            kind = "full" if full_sync else "incremental"
            message = (
                f"Could not queue the {kind} sync of {mapping.business_name}: the task queue is unreachable ({exc})."
            )
            # This run and those not sent yet: none may wait for a task that never comes
            # (a later trigger would join it).
            unsent = [unsent_run.pk for _mapping, unsent_run in to_queue[position:]]
            SyncRun.objects.filter(pk__in=unsent, status=SyncRun.Status.QUEUED).update(
                status=SyncRun.Status.FAILED, finished_at=timezone.now(), error_message=message
            )
            raise SyncQueueUnavailable(message, request=request) from exc
        request.queued.append(QueuedSync(mapping=mapping, task_id=task_id, run=run))
    return request


def wait_for_runs(*, runs: Iterable[SyncRun], timeout: float) -> list[SyncRun]:
    """The runs as the database holds them once all have finished, or when `timeout`
    seconds have passed (0: look once, do not wait), in the order given.

    Polls the database: the workers write every outcome there, and the project keeps
    no Celery result backend. Call it outside a transaction, or it never sees the
    workers' commits. A dropped connection is replaced, never raised."""
    runs = list(runs)
    if not runs:
        return []
    ids = [run.pk for run in runs]
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        try:
            current = SyncRun.objects.select_related("mapping__tenant").in_bulk(ids)
        except DatabaseError as exc:
            if connection.in_atomic_block:
                raise
            # The connection dropped (a restarted database, a terminated backend): the
            # runs go on in the workers; look again on a fresh connection, and if the
            # database stays away, answer with the runs as last seen (still pending).
            logger.warning("%s Lost the database while waiting for runs; looking again: %s", LOG_PREFIX, exc)
            connection.close()
            current = {}
        # A run deleted meanwhile (its mapping was deleted) stays as it was last seen.
        runs = [current.get(run.pk, run) for run in runs]
        remaining = deadline - time.monotonic()
        if all(run.status in SyncRun.FINISHED_STATUSES for run in runs) or remaining <= 0:
            return runs
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.5)


def cancel_run(*, actor: Actor, run: SyncRun) -> SyncRun:
    """Cancel a run: one still queued is recorded `cancelled` at once (the worker that
    later receives its task finds it not queued and does nothing); a running one is
    asked to stop, and its worker stops it once the pages it has fetched are written,
    keeping what it wrote and the watermark. Raises `RunAlreadyFinished` for a run that has ended."""
    ensure_may(actor, Action.MANAGE, tenant=run.mapping.tenant)
    now = timezone.now()
    who = actor_name(actor)
    cancelled = SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.QUEUED).update(
        status=SyncRun.Status.CANCELLED,
        cancel_requested_at=now,
        finished_at=now,
        heartbeat_at=now,
        error_message=f"Cancelled by {who} before a worker started it.",
    )
    if not cancelled:
        # Claimed by a worker since we looked, or running all along: ask it to stop
        # (a second request keeps the first one's time).
        SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING, cancel_requested_at__isnull=True).update(
            cancel_requested_at=now
        )
    mapping = run.mapping
    run.refresh_from_db()
    run.mapping = mapping
    if not cancelled and run.status != SyncRun.Status.RUNNING:
        raise RunAlreadyFinished(
            f"Run {run.pk} has already finished ({run.get_status_display().lower()}); there is nothing to cancel."
        )
    logger.info(
        "%s Run %s of %s %s by %s",
        LOG_PREFIX,
        run.pk,
        mapping.business_name,
        "cancelled" if cancelled else "asked to stop once the pages it has fetched are written",
        who,
    )
    return run


def sync_now(
    *,
    actor: Actor,
    mapping: SabitoMapping,
    full_sync: bool,
    trigger: str,
    on_page: Callable[[SyncResult], None] | None = None,
) -> SyncResult:
    """Sync one mapping in this process. Raises `SyncAlreadyRunning` if it is syncing."""
    ensure_may(actor, Action.MANAGE, tenant=mapping.tenant)
    return sync_mapping(mapping=mapping, full_sync=full_sync, trigger=trigger, on_page=on_page)


def sync_all_now(
    *, actor: Actor, mappings: Iterable[SabitoMapping] | None, full_sync: bool, trigger: str
) -> list[SyncResult]:
    """Sync the given mappings (None: every active one) in this process, one after the other."""
    if mappings is None:
        mappings = SabitoMapping.objects.active().select_related("tenant")
    mappings = list(mappings)
    ensure_may_sync(actor=actor, mappings=mappings)
    return sync_all_mappings(full_sync=full_sync, trigger=trigger, mappings=mappings)


# --- The sync endpoints' answer ---------------------------------------------------------------


@dataclass(frozen=True)
class PendingSync:
    """A mapping of a sync answer that has not finished: its queued or running run
    (None when it was not queued because a sync of it was already running)."""

    mapping: SabitoMapping
    run: SyncRun | None
    task_id: str | None
    # Not queued: the run holding the mapping, which does not do what was asked.
    held_by: SyncRun | None = None


@dataclass(frozen=True)
class SyncAnswer:
    """What a sync trigger answers: every run finished (`results`, one per mapping, in
    the order asked), or not all of them (`pending`, one per mapping), with the
    message that says so."""

    finished: bool
    success: bool
    message: str
    results: list[SyncResult] = field(default_factory=list)
    pending: list[PendingSync] = field(default_factory=list)


def trigger_syncs(
    *,
    actor: Actor,
    mappings: list[SabitoMapping],
    full_sync: bool,
    trigger: str,
    run_async: bool,
    refuse_running: bool = False,
) -> SyncAnswer:
    """Queue the syncs (`request_sync`: a mapping with a run queued or running joins
    it) and wait for them (`SABITO_SYNC_API_WAIT`; not at all when `run_async`). A
    mapping refused (a full sync asked while an incremental one runs), or whose run a
    worker found held by another (a scheduled sync that started first), is
    `SyncAlreadyRunning` when it is the only one asked for (`refuse_running`): never a
    "completed" answer for a sync this trigger did not get. Among several, it is an
    "already running" result naming the run that holds the mapping."""
    wait = 0.0 if run_async else load_sabito_settings().api_wait_seconds
    outcome = request_sync(actor=actor, mappings=mappings, full_sync=full_sync, trigger=trigger)
    refusals = already_running_refusals(outcome.already_running)
    if refuse_running and refusals:
        raise refusals[0]
    task_ids = {item.run.pk: item.task_id for item in outcome.followed}
    runs = [item.run for item in outcome.followed]
    if not run_async:
        runs = wait_for_runs(runs=runs, timeout=wait)
    if refuse_running:
        for refused in runs:
            if refused.status == SyncRun.Status.ALREADY_RUNNING:
                raise SyncAlreadyRunning(refused.mapping, running_run_of(refused.mapping))
    run_of = {run.mapping_id: run for run in runs}
    refusal_of = {refusal.mapping.pk: refusal for refusal in refusals}
    if not run_async and all(run.status in SyncRun.FINISHED_STATUSES for run in runs):
        results = [
            result_of_run(run_of[mapping.pk])
            if mapping.pk in run_of
            else already_running_result(refusal_of[mapping.pk])
            for mapping in mappings
        ]
        failed = sum(1 for result in results if result.status == SyncRun.Status.FAILED)
        return SyncAnswer(finished=True, success=not failed, message=finished_message(results), results=results)
    pending = []
    for mapping in mappings:
        followed = run_of.get(mapping.pk)
        refusal = refusal_of.get(mapping.pk)
        pending.append(
            PendingSync(
                mapping=mapping,
                run=followed,
                task_id=task_ids.get(followed.pk) if followed else None,
                held_by=refusal.running_run if refusal else None,
            )
        )
    return SyncAnswer(
        finished=False, success=True, message=pending_message(runs, refusals, waited=wait), pending=pending
    )


def already_running_refusals(mappings: list[SabitoMapping]) -> list[SyncAlreadyRunning]:
    """Why each of `mappings` was not queued, naming the run holding it."""
    holders = {run.mapping_id: run for run in live_runs().filter(mapping__in=mappings)}
    return [SyncAlreadyRunning(mapping, holders.get(mapping.pk)) for mapping in mappings]


# How the message names the mappings that neither succeeded nor failed.
NOT_COMPLETED = {
    SyncRun.Status.ALREADY_RUNNING: "already running, so not started again",
    SyncRun.Status.CANCELLED: "cancelled",
    SyncRun.Status.INTERRUPTED: "interrupted by a worker shutting down, to resume in a new run",
}


def finished_message(results: list[SyncResult]) -> str:
    """The guide's "Sync completed", with failures counted. A mapping that was already
    syncing, or a run cancelled or interrupted, is not a failure: the message names it."""
    statuses = [result.status for result in results]
    failed = statuses.count(SyncRun.Status.FAILED)
    message = "Sync completed"
    if failed:
        plural = "" if len(results) == 1 else "s"
        message = f"Sync completed with failures for {failed} of {len(results)} mapping{plural}"
    for run_status, label in NOT_COMPLETED.items():
        names = [result.business_name for result, of in zip(results, statuses, strict=True) if of == run_status]
        if names:
            message += f"; {label}: {', '.join(names)}"
    return message


def pending_message(runs: list[SyncRun], refusals: list[SyncAlreadyRunning], *, waited: float) -> str:
    unfinished = [run for run in runs if run.status not in SyncRun.FINISHED_STATUSES]
    if waited:
        message = (
            f"Sync queued; {len(unfinished)} of {len(runs)} run{'' if len(runs) == 1 else 's'} not finished after "
            f"{waited:g} s. Poll each run's url for its progress and result."
        )
    else:
        message = "Sync queued. Poll each run's url for its progress and result."
    waiting = [run.mapping.business_name for run in runs if run.status == SyncRun.Status.QUEUED]
    if waited and waiting:
        message += (
            f" No worker has picked up {', '.join(waiting)} within {waited:g} s: is a Celery worker running "
            "(and not busy with other syncs)?"
        )
    if refusals:
        names = ", ".join(refusal.mapping.business_name for refusal in refusals)
        message += f" Not queued, a sync is already running: {names}."
    return message
