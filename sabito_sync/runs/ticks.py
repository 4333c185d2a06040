"""A fan-out's count of its finished mappings, and its summary line ("All tenants sync
completed") logged once, by whichever task finishes last; a mapping delivered twice
counts once (docs/architecture.md, "A fan-out's summary")."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, cast

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from ..logs import LOG_PREFIX, log_all_completed
from ..models import SyncTick, SyncTickMapping

if TYPE_CHECKING:
    from django.db.models import Field

logger = logging.getLogger("sabito_sync.ticks")

TICK_KWARG = "tick_id"


def start_tick(*, expected: int, full_sync: bool, trigger: str) -> str | None:
    """Record a fan-out of `expected` mapping tasks; returns the tick's id for them
    to carry. A fan-out of nothing is complete at once."""
    if expected == 0:
        log_summary(total_tenants=0, created=0, updated=0, errors=0)
        return None
    tick = SyncTick.objects.create(trigger=trigger, full_sync=full_sync, started_at=timezone.now(), expected=expected)
    return str(tick.pk)


def tick_kwargs(tick_id: str | None) -> dict[str, str]:
    """The keyword arguments that make a mapping task count towards its tick."""
    return {TICK_KWARG: tick_id} if tick_id else {}


def mapping_finished(*, tick_id: str, mapping_id: str, result: dict[str, Any] | None) -> bool:
    """Count one mapping of a tick as finished with `result` (the task's return value;
    None when it raised). Returns True for the call that completed the tick."""
    return mappings_finished(tick_id=tick_id, results={mapping_id: result})


def mappings_finished(*, tick_id: str, results: dict[str, dict[str, Any] | None]) -> bool:
    """Count mappings of a tick as finished, each (mapping id → its result, as
    `mapping_finished` takes it) at most once however often it is counted: a chunk
    of mappings costs the statements of one. Returns True for the call that
    completed the tick."""
    if not results:
        return False
    with transaction.atomic():
        try:
            with transaction.atomic():
                counted = newly_counted(tick_id=tick_id, mapping_ids=list(results))
        except IntegrityError:
            return False  # the tick was pruned meanwhile
        if not counted:
            return False  # delivered twice: already counted
        created = updated = errors = 0
        for mapping_id, result in results.items():
            if str(uuid.UUID(str(mapping_id))) not in counted:
                continue
            result = result if isinstance(result, dict) else {}
            created += int(result.get("created") or 0)
            updated += int(result.get("updated") or 0)
            errors += int(result.get("errors") or 0) + (0 if result.get("success") else 1)
        SyncTick.objects.filter(pk=tick_id).update(
            finished=F("finished") + len(counted),
            created=F("created") + created,
            updated=F("updated") + updated,
            errors=F("errors") + errors,
        )
        # Conditional, so exactly one finisher claims the tick whatever the isolation level.
        completed = SyncTick.objects.filter(pk=tick_id, finished__gte=F("expected"), completed_at__isnull=True).update(
            completed_at=timezone.now()
        )
    if not completed:
        return False
    tick = SyncTick.objects.get(pk=tick_id)
    log_summary(total_tenants=tick.expected, created=tick.created, updated=tick.updated, errors=tick.errors)
    return True


def newly_counted(*, tick_id: str, mapping_ids: list[str]) -> set[str]:
    """Record these mappings as finished for the tick; the ids (as text) of those not
    recorded before. `SyncTickMapping` is unique per tick and mapping, and ON CONFLICT
    DO NOTHING ... RETURNING says which rows are new in the same statement (PostgreSQL,
    and SQLite from 3.35)."""
    meta, quote = SyncTickMapping._meta, connection.ops.quote_name
    tick_column, mapping_column = (
        quote(cast("Field[Any, Any]", meta.get_field(name)).column) for name in ("tick", "mapping_id")
    )
    tick_value = meta.get_field("tick").get_db_prep_value(tick_id, connection)
    mapping_field = meta.get_field("mapping_id")
    params = []
    for mapping_id in mapping_ids:
        params += [tick_value, mapping_field.get_db_prep_value(mapping_id, connection)]
    rows = ", ".join(["(%s, %s)"] * len(mapping_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(meta.db_table)} ({tick_column}, {mapping_column}) VALUES {rows} "
            f"ON CONFLICT ({tick_column}, {mapping_column}) DO NOTHING RETURNING {mapping_column}",
            params,
        )
        return {str(uuid.UUID(str(value))) for (value,) in cursor.fetchall()}


def log_summary(*, total_tenants: int, created: int, updated: int, errors: int) -> None:
    log_all_completed(logger, total_tenants=total_tenants, created=created, updated=updated, errors=errors)


def count_chunk_safely(*, tick_id: str, results: dict[str, dict[str, Any] | None]) -> None:
    try:
        mappings_finished(tick_id=tick_id, results=results)
    except Exception:  # counting is bookkeeping: it must never fail the task
        logger.exception("%s Could not count %d mappings towards tick %s", LOG_PREFIX, len(results), tick_id)


def count_safely(*, tick_id: str, mapping_id: Any, result: Any) -> None:
    # The mapping's id and the task's return value as the task's signal carries them.
    try:
        mapping_finished(tick_id=tick_id, mapping_id=mapping_id, result=result)
    except Exception:  # counting is bookkeeping: it must never fail the task
        logger.exception("%s Could not count mapping %s towards tick %s", LOG_PREFIX, mapping_id, tick_id)
