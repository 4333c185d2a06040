"""Runs whose worker died or stopped: asked to stop on a worker's shutdown, ended
when their heartbeat went stale, and handed back to be queued again."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from ..conf import SabitoSettings
from ..models import SyncRun
from .queries import stale_heartbeat_cutoff


def request_stop_of_worker_runs(*, worker: str) -> int:
    """Ask every run of `worker` (a Celery node name) to stop after its page, as
    interrupted: the worker is shutting down. Returns how many were asked."""
    return SyncRun.objects.filter(status=SyncRun.Status.RUNNING, worker=worker, cancel_requested_at=None).update(
        cancel_requested_at=timezone.now(), stop_reason=SyncRun.StopReason.SHUTDOWN
    )


def reap_dead_runs(*, settings: SabitoSettings) -> list[SyncRun]:
    """Finish as failed every running run whose heartbeat went stale (its worker
    died: SIGKILL, out of memory, a lost host), and take up every run a worker's
    shutdown interrupted; returns them, for their syncs to be queued again (they
    resume from their checkpoints). Each is taken up once, by one reaper."""
    now, reaped = timezone.now(), []
    for run in SyncRun.objects.filter(status=SyncRun.Status.INTERRUPTED, stop_reason=SyncRun.StopReason.SHUTDOWN):
        if SyncRun.objects.filter(pk=run.pk, stop_reason=SyncRun.StopReason.SHUTDOWN).update(
            stop_reason=SyncRun.StopReason.QUEUED_AGAIN
        ):
            reaped.append(run)
    for run in SyncRun.objects.filter(status=SyncRun.Status.RUNNING, heartbeat_at__lt=stale_heartbeat_cutoff(settings)):
        if abandon(run, now=now, afterwards="the sync was queued again"):
            reaped.append(run)
    return reaped


def abandon(run: SyncRun, *, now: datetime, afterwards: str) -> bool:
    """End `run` as failed because its worker died (`stop_reason` ABANDONED), saying
    what happens `afterwards`; False when it is no longer running with the heartbeat
    seen: it came back to life, or another reaper or contender ended it first."""
    return bool(
        SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING, heartbeat_at=run.heartbeat_at).update(
            status=SyncRun.Status.FAILED,
            finished_at=now,
            stop_reason=SyncRun.StopReason.ABANDONED,
            error_message=(
                f"Abandoned: no progress since {run.heartbeat_at.isoformat()} (its worker died); "
                f"the watermark was not moved and {afterwards}."
            ),
        )
    )
