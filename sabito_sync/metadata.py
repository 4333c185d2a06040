"""The sync state a mapping keeps in its `metadata` JSON, read and written here only.

`metadata["lastSyncedAt"]` is the incremental watermark and `metadata["lastSyncResult"]`
the summary of the latest run, camelCase as the guide shows it (the API hands it out
as is, operators read it). A run's end writes both; everything else reads them
defensively, since the admin lets an operator edit that JSON by hand.
"""

from __future__ import annotations

WATERMARK = "lastSyncedAt"
LAST_RESULT = "lastSyncResult"


def watermark_text(metadata) -> str | None:
    """The watermark as stored (UTC ISO 8601), or None when there is none or it is not text."""
    value = metadata.get(WATERMARK) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None


def last_sync_result(metadata) -> dict | None:
    """The latest run's summary, or None when there is none or it is not an object."""
    value = metadata.get(LAST_RESULT) if isinstance(metadata, dict) else None
    return value if isinstance(value, dict) else None


def with_outcome(metadata, *, result, full_sync: bool, synced_at: str, watermark: str | None) -> dict:
    """A copy of `metadata` holding the summary of a finished run (a `SyncResult`),
    and its new watermark if it moved one."""
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
    updated = dict(metadata or {})
    updated[LAST_RESULT] = summary
    if watermark is not None:
        updated[WATERMARK] = watermark
    return updated
