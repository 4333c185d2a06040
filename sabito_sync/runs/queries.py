"""Which runs hold their mapping now, and which an operator can follow: the
questions every layer asks of the run table, answered once."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Case, Q, QuerySet, Value, When
from django.utils import timezone

from ..conf import SabitoSettings, load_sabito_settings
from ..models import SabitoMapping, SabitoMappingQuerySet, SyncRun


def stale_heartbeat_cutoff(settings: SabitoSettings) -> datetime:
    """A running run whose heartbeat is older than this belongs to a worker that
    died: it no longer holds its mapping, and the next sync takes it over."""
    return timezone.now() - timedelta(seconds=settings.stale_run_after_seconds)


def running_run_of(mapping: SabitoMapping) -> SyncRun | None:
    """The run holding the mapping's lock, alive or stale, or None."""
    return SyncRun.objects.filter(mapping=mapping, status=SyncRun.Status.RUNNING).first()


def live_runs() -> QuerySet[SyncRun]:
    """Runs holding their mapping's lock now. A running run whose heartbeat went
    stale belongs to a dead worker: the next sync takes it over, so it does not count."""
    stale_before = stale_heartbeat_cutoff(load_sabito_settings())
    return SyncRun.objects.filter(status=SyncRun.Status.RUNNING, heartbeat_at__gte=stale_before)


def active_runs() -> QuerySet[SyncRun]:
    """Runs waiting for a worker or holding their mapping now (see `live_runs`), the
    running one of a mapping first: what an operator follows and may cancel."""
    stale_before = stale_heartbeat_cutoff(load_sabito_settings())
    return SyncRun.objects.filter(
        Q(status=SyncRun.Status.QUEUED) | Q(status=SyncRun.Status.RUNNING, heartbeat_at__gte=stale_before)
    ).order_by(Case(When(status=SyncRun.Status.RUNNING, then=Value(0)), default=Value(1)), "-started_at")


# A run queued longer than this may have lost its task (a broker that lost its
# messages): a trigger then queues a run of its own rather than join one that may
# never start. Generous: a queue behind a long beat tick drains well within it.
QUEUED_RUN_JOINABLE_FOR = timedelta(minutes=10)


def joinable_runs() -> QuerySet[SyncRun]:
    """The runs a new trigger joins instead of queuing another (`active_runs`, less
    queued runs older than QUEUED_RUN_JOINABLE_FOR), the running one of a mapping first."""
    return active_runs().exclude(status=SyncRun.Status.QUEUED, started_at__lt=timezone.now() - QUEUED_RUN_JOINABLE_FOR)


def with_sync_running(mappings: SabitoMappingQuerySet) -> QuerySet[SabitoMapping]:
    """`mappings` annotated with `sync_running` (see `live_runs`), in the same query."""
    return mappings.with_sync_running(live_runs=live_runs())


def is_sync_running(*, mapping: SabitoMapping) -> bool:
    return live_runs().filter(mapping=mapping).exists()


def joinable_run_of(mapping_ids: list[Any]) -> dict[str, SyncRun]:
    """Mapping id (as text) → the run a new trigger of it joins (`joinable_runs`: the
    running one, else the latest queued), for the given mappings, in one query."""
    joinable: dict[str, SyncRun] = {}
    for run in joinable_runs().filter(mapping_id__in=mapping_ids):
        joinable.setdefault(str(run.mapping_id), run)
    return joinable
