"""Resuming: where an unfinished run of a mapping stopped, and whether a new run
may carry on from its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from ..conf import SabitoSettings
from ..models import SabitoMapping, SyncRun
from .queries import stale_heartbeat_cutoff


@dataclass(frozen=True)
class Resume:
    """Where a new run carries on from an unfinished one: the same kind of sync with
    the same `updatedAfter`, from the checkpoint of its last committed page."""

    from_run: SyncRun
    full_sync: bool
    updated_after: datetime | None
    checkpoint: dict[str, Any]

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
    if (checkpoint.get("businessId"), checkpoint.get("tenantId")) != (
        mapping.sabito_business_id,
        str(mapping.tenant_id),
    ):
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
    *,
    mapping: SabitoMapping,
    full_sync: bool,
    updated_after: datetime | None,
    chain_started_at: datetime,
    resumed: bool,
) -> dict[str, Any]:
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
