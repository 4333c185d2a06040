"""The sync state a mapping keeps in its `metadata` JSON, read and written here only.

`metadata["lastSyncedAt"]` is the incremental watermark and `metadata["lastSyncResult"]`
the summary of the latest run, camelCase as the guide shows it (the API hands it out
as is, operators read it). A run's end writes both; everything else reads them
defensively, since the admin lets an operator edit that JSON by hand.
`metadata["watermarkReset"]` says why the watermark was reset on purpose (the mapping
was re-pointed), until a run moves the watermark again.
"""

from __future__ import annotations

WATERMARK = "lastSyncedAt"
LAST_RESULT = "lastSyncResult"
WATERMARK_RESET = "watermarkReset"


def watermark_text(metadata) -> str | None:
    """The watermark as stored (UTC ISO 8601), or None when there is none or it is not text."""
    value = metadata.get(WATERMARK) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None


def last_sync_result(metadata) -> dict | None:
    """The latest run's summary, or None when there is none or it is not an object."""
    value = metadata.get(LAST_RESULT) if isinstance(metadata, dict) else None
    return value if isinstance(value, dict) else None


def watermark_reset_reason(metadata) -> str:
    """Why the watermark was reset, or "" when it was not (or a run has moved it since)."""
    value = metadata.get(WATERMARK_RESET) if isinstance(metadata, dict) else None
    return str(value.get("reason") or "") if isinstance(value, dict) else ""


def with_watermark_reset(metadata, *, reason: str, at: str) -> dict:
    """A copy of `metadata` without a watermark, saying why (the next run's note)."""
    updated = dict(metadata if isinstance(metadata, dict) else {})
    updated.pop(WATERMARK, None)
    updated[WATERMARK_RESET] = {"reason": reason, "at": at}
    return updated


def outcome_summary(*, result, full_sync: bool, synced_at: str) -> dict:
    """The `lastSyncResult` of a finished run (a `SyncResult`)."""
    summary = {
        "success": result.success,
        "fullSync": full_sync,
        "customersProcessed": result.processed,
        "created": result.created,
        "updated": result.updated,
        "skipped": result.skipped,
        "errors": result.errors,
        "syncedAt": synced_at,
    }
    if not result.success:
        summary["error"] = result.error
    return summary


def with_outcome(metadata, *, result, full_sync: bool, synced_at: str, watermark: str | None) -> dict:
    """A copy of `metadata` holding the summary of a finished run (a `SyncResult`),
    and its new watermark if it moved one. (On PostgreSQL the run's end writes the
    same keys in SQL: `runs.sql`.)"""
    updated = dict(metadata or {})
    updated[LAST_RESULT] = outcome_summary(result=result, full_sync=full_sync, synced_at=synced_at)
    if watermark is not None:
        updated[WATERMARK] = watermark
        updated.pop(WATERMARK_RESET, None)
    return updated
