"""A run's start and end in one statement each on PostgreSQL, and the progress it
records with every batch (docs/architecture.md, "A run's start and end")."""

from __future__ import annotations

import functools
import json
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from django.db import connection

from .. import metadata
from ..models import SabitoMapping, SyncRun

if TYPE_CHECKING:
    from django.db.models import Field

# What `find_resume` reads of the mapping's latest run.
LATEST_FIELDS = ("id", "status", "started_at", "finished_at", "heartbeat_at", "checkpoint")


def insert_running_run(run: SyncRun) -> tuple[bool, SyncRun | None]:
    """Insert `run` (status running) unless another run holds its mapping, and read,
    as of just before, the mapping's latest run that may have left work to resume.
    Returns (inserted, that latest run or None). Not inserted means the partial
    unique index on running runs said no: the caller looks at the holder."""
    sql = _insert_sql(asynchronous_commit=not connection.in_atomic_block)
    fields = SyncRun._meta.concrete_fields
    params = [field.get_db_prep_save(field.pre_save(run, True), connection) for field in fields]
    mapping_id = params[[field.name for field in fields].index("mapping")]
    with connection.cursor() as cursor:
        cursor.execute(sql, [mapping_id, SyncRun.Status.QUEUED, SyncRun.Status.ALREADY_RUNNING, *params])
        inserted, *latest = cursor.fetchone()
    if latest[0] is None:
        return bool(inserted), None
    values = [
        # (No expression: JSONField.from_db_value looks at one only for a key transform.)
        SyncRun._meta.get_field("checkpoint").from_db_value(value, None, connection)  # type: ignore[arg-type]
        if name == "checkpoint"
        else value
        for name, value in zip(LATEST_FIELDS, latest, strict=True)
    ]
    return bool(inserted), SyncRun.from_db(connection.alias, LATEST_FIELDS, values)


@functools.cache
def _insert_sql(*, asynchronous_commit: bool) -> str:
    meta, quote = SyncRun._meta, connection.ops.quote_name
    table, mapping, status, started_at = (
        quote(meta.db_table),
        quote(meta.get_field("mapping").column),
        quote(meta.get_field("status").column),
        quote(meta.get_field("started_at").column),
    )
    columns = ", ".join(quote(field.column) for field in meta.concrete_fields)
    placeholders = ", ".join(["%s"] * len(meta.concrete_fields))
    latest = ", ".join(
        f"latest.{quote(cast('Field[Any, Any]', meta.get_field(name)).column)}" for name in LATEST_FIELDS
    )
    # The CTEs share the statement's snapshot: `latest` cannot see the row inserted
    # beside it. ON CONFLICT names the running-run index (its predicate included), so
    # a held mapping inserts nothing instead of failing the statement.
    return f"""
        WITH latest AS (
            SELECT * FROM {table}
            WHERE {mapping} = %s AND {status} NOT IN (%s, %s)
            ORDER BY {started_at} DESC
            LIMIT 1
        ), inserted AS (
            INSERT INTO {table} ({columns}) VALUES ({placeholders})
            ON CONFLICT ({mapping}) WHERE {status} = 'running' DO NOTHING
            RETURNING 1
        )
        SELECT EXISTS (SELECT 1 FROM inserted), {latest}
        FROM {_one_row(asynchronous_commit)} LEFT JOIN latest ON true
    """


def finish_run_and_record_outcome(
    *,
    run: SyncRun,
    mapping: SabitoMapping,
    values: dict[str, Any],
    summary: dict[str, Any],
    watermark: str | None,
    finished_at: datetime,
) -> tuple[bool, dict[str, Any] | None]:
    """Set `values` on the run if it is still running and, in the same statement, put
    `summary` on its mapping's metadata and move the watermark to `watermark` (if
    given) unless the mapping was re-pointed since the run started. Returns (whether
    the run was still ours, the mapping's metadata as stored, None if untouched)."""
    sql = _finish_sql(tuple(values), asynchronous_commit=not connection.in_atomic_block)
    params = [*_run_values(values), run.pk, SyncRun.Status.RUNNING]
    meta = SabitoMapping._meta
    summary_json = json.dumps({metadata.LAST_RESULT: summary})
    params += [
        watermark is not None,
        mapping.sabito_business_id,
        meta.get_field("tenant").get_db_prep_value(mapping.tenant_id, connection),
        summary_json,
        json.dumps({metadata.WATERMARK: watermark}),
        metadata.WATERMARK_RESET,
        summary_json,
        meta.get_field("updated_at").get_db_prep_save(finished_at, connection),
        mapping.pk,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        still_ours, stored = cursor.fetchone()
    if stored is None:
        return bool(still_ours), None
    # (No expression: JSONField.from_db_value looks at one only for a key transform.)
    return bool(still_ours), meta.get_field("metadata").from_db_value(stored, None, connection)  # type: ignore[arg-type]


@functools.cache
def _finish_sql(fields: tuple[str, ...], *, asynchronous_commit: bool) -> str:
    run_meta, mapping_meta, quote = SyncRun._meta, SabitoMapping._meta, connection.ops.quote_name
    run_pk, status = quote(run_meta.pk.column), quote(run_meta.get_field("status").column)
    stored = quote(mapping_meta.get_field("metadata").column)
    business, tenant, updated_at, mapping_pk = (
        quote(cast("Field[Any, Any]", mapping_meta.get_field(name)).column)
        for name in ("sabito_business_id", "tenant", "updated_at", "id")
    )
    # The metadata an operator may have edited by hand into something not an object
    # is replaced, as `metadata.with_outcome` does with what it cannot copy.
    base = f"(CASE WHEN jsonb_typeof(m.{stored}) = 'object' THEN m.{stored} ELSE '{{}}'::jsonb END)"
    # The row lock the UPDATE takes makes PostgreSQL re-read a mapping changed
    # meanwhile and compute the new metadata from that version: an operator's edit in
    # between is kept, and a re-pointed mapping (another business or tenant: this run
    # read what it no longer maps) keeps its reset watermark.
    return f"""
        WITH finished AS (
            UPDATE {quote(run_meta.db_table)} SET {_run_assignments(fields)}
            WHERE {run_pk} = %s AND {status} = %s
            RETURNING 1
        ), recorded AS (
            UPDATE {quote(mapping_meta.db_table)} AS m SET
                {stored} = CASE
                    WHEN %s AND m.{business} = %s AND m.{tenant} = %s
                    THEN ({base} || %s::jsonb || %s::jsonb) - %s
                    ELSE {base} || %s::jsonb
                END,
                {updated_at} = %s
            WHERE m.{mapping_pk} = %s AND EXISTS (SELECT 1 FROM finished)
            RETURNING m.{stored}
        )
        SELECT EXISTS (SELECT 1 FROM finished), (SELECT {stored} FROM recorded)
        FROM {_one_row(asynchronous_commit)}
    """


def record_run_progress(*, run_id: uuid.UUID, values: dict[str, Any]) -> bool:
    """Set `values` (field name → value) on the run if it is still running; False if it
    no longer is (it was taken over). The ORM's update() would build this statement
    afresh for every batch, which costs more than running it."""
    sql = _run_progress_sql(connection.vendor, tuple(values))
    params = [*_run_values(values), SyncRun._meta.pk.get_db_prep_value(run_id, connection), SyncRun.Status.RUNNING]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        updated: int = cursor.rowcount
        return updated > 0


@functools.cache
def _run_progress_sql(vendor: str, fields: tuple[str, ...]) -> str:
    meta, quote = SyncRun._meta, connection.ops.quote_name
    pk, status = quote(meta.pk.column), quote(meta.get_field("status").column)
    return f"UPDATE {quote(meta.db_table)} SET {_run_assignments(fields)} WHERE {pk} = %s AND {status} = %s"


def _run_assignments(fields: tuple[str, ...]) -> str:
    """`column = %s, ...` for these SyncRun fields, in order (see `_run_values`)."""
    meta, quote = SyncRun._meta, connection.ops.quote_name
    return ", ".join(f"{quote(cast('Field[Any, Any]', meta.get_field(name)).column)} = %s" for name in fields)


def _run_values(values: dict[str, Any]) -> list[Any]:
    """The database values of SyncRun field values (field name → value), in order."""
    return [
        cast("Field[Any, Any]", SyncRun._meta.get_field(name)).get_db_prep_save(value, connection)
        for name, value in values.items()
    ]


def _one_row(asynchronous_commit: bool) -> str:
    """The row a statement's answer is read from, which also makes the statement's own
    transaction commit without waiting for its WAL to reach the disk, when the
    statement is a transaction of its own (never a caller's larger one).

    Waiting for that flush was a third of a nothing-new mapping's time, and nothing
    needs it: WAL is written in order, so every page a run wrote (committed and
    flushed before its end) is on disk before the run's end can be; a crash of
    PostgreSQL that loses the end leaves the run to the reaper and the watermark
    where it was, and the next sync reads those customers again, as upserts."""
    if asynchronous_commit:
        return "(SELECT set_config('synchronous_commit', 'off', true)) AS one"
    return "(SELECT 1) AS one"
