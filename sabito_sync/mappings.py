"""The life of a Sabito mapping: connecting a business to a tenant, renaming,
pausing, re-pointing and deleting it, and asking for its syncs.

The API, the admin and the management commands call these functions and only
translate requests and answers; every rule about mappings lives here, and who
may do what is `access`'s. `actor` is the user acting, or None for the platform
itself (a management command, a scheduled task).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable

from django.db import IntegrityError, transaction
from django.db.models import Case, Q, QuerySet, Value, When
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from . import metadata
from .access import Action, ensure_may
from .client import format_timestamp
from .conf import load_sabito_settings
from .logs import LOG_PREFIX
from .models import Customer, SabitoMapping, SyncRun, Tenant
from .runs import SyncResult, stale_heartbeat_cutoff
from .sync import sync_all_mappings, sync_mapping
from .tasks import enqueue_mapping_sync

logger = logging.getLogger("sabito_sync.mappings")

class BusinessAlreadyMapped(Exception):
    """The Sabito business is mapped to a tenant already (only operators get this
    far, so the message may say which)."""


class NoSuchTenant(Exception):
    pass


class SyncIsRunning(Exception):
    """The change must wait for the mapping's running sync to finish."""


class RunAlreadyFinished(Exception):
    """The run has ended; there is nothing left to cancel."""


class SyncQueueUnavailable(Exception):
    """The broker refused a sync; `request` says what was done before it did."""

    def __init__(self, message: str, *, request: SyncRequest):
        super().__init__(message)
        self.request = request


# --- Is a sync running ---------------------------------------------------------------


def live_runs() -> QuerySet:
    """Runs holding their mapping's lock now. A running run whose heartbeat went
    stale belongs to a dead worker: the next sync takes it over, so it does not count."""
    stale_before = stale_heartbeat_cutoff(load_sabito_settings())
    return SyncRun.objects.filter(status=SyncRun.Status.RUNNING, heartbeat_at__gte=stale_before)


def active_runs() -> QuerySet:
    """Runs waiting for a worker or holding their mapping now (see `live_runs`), the
    running one of a mapping first: what an operator follows and may cancel."""
    stale_before = stale_heartbeat_cutoff(load_sabito_settings())
    return SyncRun.objects.filter(
        Q(status=SyncRun.Status.QUEUED) | Q(status=SyncRun.Status.RUNNING, heartbeat_at__gte=stale_before)
    ).order_by(Case(When(status=SyncRun.Status.RUNNING, then=Value(0)), default=Value(1)), "-started_at")


def is_sync_running(*, mapping: SabitoMapping) -> bool:
    return live_runs().filter(mapping=mapping).exists()


def with_sync_running(mappings: QuerySet) -> QuerySet:
    """`mappings` annotated with `sync_running` (see `live_runs`), in the same query."""
    return mappings.with_sync_running(live_runs=live_runs())


def ensure_no_sync_running(mappings: Iterable[SabitoMapping], *, to: str) -> None:
    """Raise `SyncIsRunning` if any of `mappings` is syncing; `to` completes
    "… once it has finished, …" (what the caller wanted to do)."""
    running = list(
        SabitoMapping.objects.filter(pk__in=[mapping.pk for mapping in mappings], runs__in=live_runs())
        .distinct()
        .values_list("business_name", flat=True)
    )
    if running:
        names = ", ".join(sorted(running))
        raise SyncIsRunning(f"A sync of {names} is running; {to} once it has finished.")


# --- Connecting, changing and deleting -------------------------------------------------


def create_mapping(
    *,
    actor,
    tenant: Tenant,
    sabito_business_id: str,
    business_name: str,
    is_active: bool = True,
) -> SabitoMapping:
    """Connect a Sabito business to a tenant: a platform operator's act."""
    ensure_may(actor, Action.CONNECT, tenant=tenant)
    try:
        with transaction.atomic():
            mapping = SabitoMapping.objects.create(
                tenant=tenant,
                sabito_business_id=sabito_business_id,
                business_name=business_name,
                is_active=is_active,
            )
    except IntegrityError:
        raise already_mapped(sabito_business_id) from None
    logger.info(
        "%s Mapping created: business %s (%s) → tenant %s, by %s",
        LOG_PREFIX,
        business_name,
        sabito_business_id,
        tenant,
        actor_name(actor),
    )
    return mapping


def update_mapping(
    *,
    actor,
    mapping: SabitoMapping,
    business_name: str | None = None,
    is_active: bool | None = None,
    sabito_business_id: str | None = None,
    tenant_id: uuid.UUID | None = None,
) -> SabitoMapping:
    """Change what is given (None: unchanged). Renaming and pausing are the tenant's;
    re-pointing the mapping at another business or tenant is an operator's, waits for
    a running sync, and resets the watermark so the next sync fetches everything."""
    changes: dict = {}
    if business_name is not None and business_name != mapping.business_name:
        changes["business_name"] = business_name
    if is_active is not None and is_active != mapping.is_active:
        changes["is_active"] = is_active
    repoint: dict = {}
    if sabito_business_id is not None and sabito_business_id != mapping.sabito_business_id:
        repoint["sabito_business_id"] = sabito_business_id
    if tenant_id is not None and tenant_id != mapping.tenant_id:
        repoint["tenant_id"] = tenant_id

    if changes:
        ensure_may(actor, Action.MANAGE, tenant=mapping.tenant)
    if repoint:
        # Before the tenant is looked up: whether a tenant exists is no business
        # of whoever may not move mappings.
        ensure_may(actor, Action.REPOINT, tenant=mapping.tenant)
        if "tenant_id" in repoint:
            repoint["tenant"] = Tenant.objects.filter(pk=repoint.pop("tenant_id")).first()
            if repoint["tenant"] is None:
                raise NoSuchTenant(f"There is no tenant {tenant_id}.")
    if not (changes or repoint):
        return mapping

    if not repoint:
        for name, value in changes.items():
            setattr(mapping, name, value)
        # Never `metadata`: a sync finishing meanwhile writes it, and must not be undone.
        mapping.save(update_fields=[*changes, "updated_at"])
        return mapping
    return repoint_mapping(actor=actor, mapping=mapping, changes=changes | repoint)


def repoint_mapping(*, actor, mapping: SabitoMapping, changes: dict) -> SabitoMapping:
    try:
        with transaction.atomic():
            # Locked like a finishing run locks it, so no run can record an outcome
            # (and a watermark for the old business) in between.
            locked = SabitoMapping.objects.select_for_update().select_related("tenant").get(pk=mapping.pk)
            ensure_no_sync_running([locked], to="change its Sabito business or tenant")
            old_business, old_tenant = locked.sabito_business_id, locked.tenant
            for name, value in changes.items():
                setattr(locked, name, value)
            now = timezone.now()
            reason = (
                f"Re-pointed from business {old_business!r} in tenant {old_tenant} to business "
                f"{locked.sabito_business_id!r} in tenant {locked.tenant} by {actor_name(actor)} at "
                f"{format_timestamp(now)}: the watermark was reset, so this sync fetches every customer."
            )
            # The next run copies the reason into its note (the history says why it
            # fetched everything); its success clears it.
            locked.metadata = metadata.with_watermark_reset(locked.metadata, reason=reason, at=format_timestamp(now))
            locked.save(update_fields=[*changes, "metadata", "updated_at"])
            # The old business's missing-marks were judged against a feed this mapping
            # no longer reads: clear them rather than leave them for good.
            Customer.objects.filter(
                tenant=old_tenant, sabito_business_id=old_business, sabito_missing_since__isnull=False
            ).update(sabito_missing_since=None, updated_at=now)
    except IntegrityError:
        raise already_mapped(changes["sabito_business_id"]) from None
    logger.info("%s Mapping %s: %s", LOG_PREFIX, locked.pk, reason)
    return locked


def set_mapping_active(*, actor, mapping: SabitoMapping, active: bool) -> SabitoMapping:
    """Pause (False) or resume (True): a paused mapping is left out of scheduled and
    sync-all runs, and can still be synced by name."""
    return update_mapping(actor=actor, mapping=mapping, is_active=active)


def delete_mapping(*, actor, mapping: SabitoMapping) -> None:
    """Delete a mapping and its run history. Its customers stay: they are the
    tenant's records now. Refused while it syncs."""
    ensure_may(actor, Action.DELETE, tenant=mapping.tenant)
    with transaction.atomic():
        ensure_no_sync_running([mapping], to="delete the mapping (pause it meanwhile to keep it out of scheduled syncs)")
        mapping.delete()
    logger.info("%s Mapping deleted: %s, by %s", LOG_PREFIX, mapping, actor_name(actor))


def already_mapped(sabito_business_id: str) -> BusinessAlreadyMapped:
    holder = SabitoMapping.objects.select_related("tenant").filter(sabito_business_id=sabito_business_id).first()
    where = f" to tenant {holder.tenant} (mapping {holder.pk})" if holder else ""
    return BusinessAlreadyMapped(
        f"Sabito business {sabito_business_id!r} is already mapped{where}; a business maps to one tenant only."
    )


def actor_name(actor) -> str:
    return actor.get_username() if actor is not None else "the platform"


# --- Syncs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedSync:
    mapping: SabitoMapping
    task_id: str
    # The run, status `queued` until a worker starts it: what a caller follows.
    run: SyncRun


@dataclass(frozen=True)
class SyncRequest:
    queued: list[QueuedSync] = field(default_factory=list)
    # Not queued: a run of these holds the mapping now.
    already_running: list[SabitoMapping] = field(default_factory=list)


def ensure_may_sync(actor, mappings: list[SabitoMapping]) -> None:
    """Syncing is MANAGE in each tenant the mappings belong to, checked once per tenant."""
    for tenant in {mapping.tenant_id: mapping.tenant for mapping in mappings}.values():
        ensure_may(actor, Action.MANAGE, tenant=tenant)


def request_sync(*, actor, mappings: Iterable[SabitoMapping], full_sync: bool, trigger: str) -> SyncRequest:
    """Queue a sync of every mapping given, except those already syncing. The check
    here spares a pointless task; the run lock in the engine is what guarantees one
    run per mapping (a sync queued twice is refused there and recorded)."""
    mappings = list(mappings)
    ensure_may_sync(actor, mappings)
    running_ids = set(live_runs().filter(mapping__in=mappings).values_list("mapping_id", flat=True))
    request = SyncRequest()
    for mapping in mappings:
        if mapping.pk in running_ids:
            request.already_running.append(mapping)
            continue
        now = timezone.now()
        run = SyncRun.objects.create(
            mapping=mapping, full_sync=full_sync, trigger=trigger, status=SyncRun.Status.QUEUED, started_at=now, heartbeat_at=now
        )
        try:
            task_id = enqueue_mapping_sync(mapping=mapping, full_sync=full_sync, trigger=trigger, run=run)
        except BrokerError as exc:
            kind = "full" if full_sync else "incremental"
            message = f"Could not queue the {kind} sync of {mapping.business_name}: the task queue is unreachable ({exc})."
            SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.FAILED, finished_at=timezone.now(), error_message=message)
            raise SyncQueueUnavailable(message, request=request) from exc
        request.queued.append(QueuedSync(mapping=mapping, task_id=task_id, run=run))
    return request


def wait_for_runs(*, runs: Iterable[SyncRun], timeout: float) -> list[SyncRun]:
    """The runs as the database holds them once all have finished, or when `timeout`
    seconds have passed (0: look once, do not wait), in the order given.

    Polls the database: the workers write every outcome there, and the project keeps
    no Celery result backend. Call it outside a transaction, or it never sees the
    workers' commits."""
    runs = list(runs)
    if not runs:
        return []
    ids = [run.pk for run in runs]
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        current = SyncRun.objects.select_related("mapping__tenant").in_bulk(ids)
        # A run deleted meanwhile (its mapping was deleted) stays as it was last seen.
        runs = [current.get(run.pk, run) for run in runs]
        remaining = deadline - time.monotonic()
        if all(run.status in SyncRun.FINISHED_STATUSES for run in runs) or remaining <= 0:
            return runs
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.5)


def cancel_run(*, actor, run: SyncRun) -> SyncRun:
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
        raise RunAlreadyFinished(f"Run {run.pk} has already finished ({run.get_status_display().lower()}); there is nothing to cancel.")
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
    actor,
    mapping: SabitoMapping,
    full_sync: bool,
    trigger: str,
    on_page: Callable[[SyncResult], None] | None = None,
) -> SyncResult:
    """Sync one mapping in this process. Raises `SyncAlreadyRunning` if it is syncing."""
    ensure_may(actor, Action.MANAGE, tenant=mapping.tenant)
    return sync_mapping(mapping=mapping, full_sync=full_sync, trigger=trigger, on_page=on_page)


def sync_all_now(*, actor, mappings: Iterable[SabitoMapping] | None, full_sync: bool, trigger: str) -> list[SyncResult]:
    """Sync the given mappings (None: every active one) in this process, one after the other."""
    if mappings is None:
        mappings = SabitoMapping.objects.filter(is_active=True).select_related("tenant")
    mappings = list(mappings)
    ensure_may_sync(actor, mappings)
    return sync_all_mappings(full_sync=full_sync, trigger=trigger, mappings=mappings)
