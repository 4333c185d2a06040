"""Work handed to the Celery workers, by the tasks' registered names.

The services queue syncs but sit below the tasks module (which calls them), so they
look their tasks up in the Celery app's registry instead of importing them. The
names are a contract with queued messages and beat rows: they never change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from celery import current_app
from django.db import transaction

from ..models import SabitoMapping, SyncRun

SYNC_MAPPING_TASK = "sabito_sync.sync_mapping"
SYNC_MAPPING_CHUNK_TASK = "sabito_sync.sync_mapping_chunk"
SYNC_ALL_TASK = "sabito_sync.sync_all_mappings"
REAP_DEAD_RUNS_TASK = "sabito_sync.reap_dead_runs"
PRUNE_RUNS_TASK = "sabito_sync.prune_runs"
SEND_ALERT_TASK = "sabito_sync.send_alert_webhook"


def registered_task(name: str) -> Any:
    """The task registered under `name` (the app's `ready()` imports `sabito_sync.tasks`)."""
    return current_app.tasks[name]


def enqueue_mapping_sync(*, mapping: SabitoMapping, full_sync: bool, trigger: str, run: SyncRun | None = None) -> str:
    """Queue a sync of one mapping (as `run`, a queued `SyncRun`, if given) once the
    current transaction commits, so the worker never looks for a row it cannot see
    yet; returns the task id now."""
    task_id = str(uuid.uuid4())
    args = [str(mapping.pk), full_sync, trigger]
    kwargs = {"run_id": str(run.pk)} if run is not None else {}
    transaction.on_commit(
        lambda: registered_task(SYNC_MAPPING_TASK).apply_async(args=args, kwargs=kwargs, task_id=task_id)
    )
    return task_id


def enqueue_mapping_syncs(*, mappings: Iterable[SabitoMapping], full_sync: bool, trigger: str) -> list[str]:
    return [enqueue_mapping_sync(mapping=mapping, full_sync=full_sync, trigger=trigger) for mapping in mappings]


def queue_sync_of_all_mappings(*, full_sync: bool, trigger: str) -> str:
    """Queue the fan-out over every active mapping; returns its task id."""
    return str(registered_task(SYNC_ALL_TASK).apply_async(kwargs={"full_sync": full_sync, "trigger": trigger}).id)


def queue_alert(payload: dict[str, Any]) -> None:
    """Queue one alert webhook POST (raises what the broker raises)."""
    registered_task(SEND_ALERT_TASK).apply_async(kwargs={"payload": payload})
