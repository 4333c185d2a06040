"""Deleting old sync runs: `manage.py sabito_prune_runs` and the daily beat task.

A run older than the retention is deleted unless it is its mapping's latest run
(the status the admin and the API show) or its latest successful run (what the
metrics' "seconds since last success" and the alert counts start from), and never
while it is running (it is the mapping's lock). Deleting goes in batches, each its
own short transaction, so a first prune of years of history never holds long locks.
Run history matters for privacy too: a run's error details hold customers' emails.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from ..conf import load_sabito_settings
from ..logs import LOG_PREFIX
from ..models import SyncRun, SyncTick

logger = logging.getLogger("sabito_sync.retention")

BATCH_SIZE = 1000


def prunable_runs(*, older_than_days: int) -> QuerySet[SyncRun]:
    """The runs `prune_runs` deletes: started before the cutoff, not running, with a
    later run of the same mapping, and, if successful, a later successful one."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    later = SyncRun.objects.filter(mapping=OuterRef("mapping"), started_at__gt=OuterRef("started_at"))
    return (
        SyncRun.objects.filter(started_at__lt=cutoff)
        .exclude(status=SyncRun.Status.RUNNING)
        .filter(Exists(later))
        .filter(~Q(status=SyncRun.Status.SUCCEEDED) | Exists(later.filter(status=SyncRun.Status.SUCCEEDED)))
    )


def prune_runs(*, older_than_days: int, batch_size: int = BATCH_SIZE) -> int:
    """Delete the runs older than `older_than_days` that need not be kept, and the
    fan-out records (ticks) as old; returns how many runs were deleted."""
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(prunable_runs(older_than_days=older_than_days).values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            deleted += SyncRun.objects.filter(pk__in=ids).delete()[0]
    cutoff = timezone.now() - timedelta(days=older_than_days)
    while ids := list(SyncTick.objects.filter(started_at__lt=cutoff).values_list("pk", flat=True)[:batch_size]):
        SyncTick.objects.filter(pk__in=ids).delete()
    logger.info("%s Deleted %d sync runs older than %d days", LOG_PREFIX, deleted, older_than_days)
    return deleted


def prune_runs_by_retention() -> int:
    """The daily prune: SABITO_RUN_RETENTION_DAYS, 0 keeping every run."""
    days = load_sabito_settings().run_retention_days
    if days == 0:
        logger.info("%s Run retention is off (SABITO_RUN_RETENTION_DAYS=0); nothing deleted", LOG_PREFIX)
        return 0
    return prune_runs(older_than_days=days)
