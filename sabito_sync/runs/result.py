"""What one mapping's sync did (`SyncResult`), how its run ended, and why a run
could not start or go on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..models import SabitoMapping, SyncRun

# A run keeps every error in its counters but stores the details of the first
# ones only, so a feed of garbage cannot grow one row without bound.
MAX_STORED_ERROR_DETAILS = 1000


@dataclass
class SyncResult:
    """What one mapping's sync did, as plain data: the interfaces render it (the API's
    serializers, the task's return value, the command's report), the run stores it."""

    business_id: str
    business_name: str
    success: bool = False
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: int = 0
    marked_missing: int = 0
    error_details: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # Whether trying again later may help (HTTP trouble, lost database connection),
    # as opposed to a rejected key or a lock held by another run.
    retryable: bool = False
    already_running: bool = False
    # Why a run that did not fail stopped before the end: SyncRun.Status.CANCELLED
    # (on request) or INTERRUPTED (its worker was shutting down); None otherwise.
    stopped: str | None = None
    # The run this result is of; for a refused sync, the run holding the mapping
    # (None when that is not known).
    run_id: str | None = None

    @property
    def status(self) -> str:
        """The `SyncRun` status this result ends (or, refused, records) its run with."""
        if self.success:
            return SyncRun.Status.SUCCEEDED
        if self.already_running:
            return SyncRun.Status.ALREADY_RUNNING
        return self.stopped or SyncRun.Status.FAILED

    @property
    def processed(self) -> int:
        """Every record the sync dealt with, whatever became of it."""
        return self.created + self.updated + self.skipped + self.errors

    def counters_text(self) -> str:
        return (
            f"{{ processed: {self.processed}, created: {self.created}, updated: {self.updated}, "
            f"skipped: {self.skipped}, errors: {self.errors} }}"
        )

    def add_error(self, detail: dict[str, Any]) -> None:
        self.errors += 1
        if len(self.error_details) < MAX_STORED_ERROR_DETAILS:
            self.error_details.append(detail)


def run_counters(result: SyncResult) -> dict[str, Any]:
    """The result's counters as the `SyncRun` fields that keep them."""
    return {
        "customers_processed": result.processed,
        "created": result.created,
        "updated": result.updated,
        "skipped": result.skipped,
        "errors": result.errors,
        "marked_missing": result.marked_missing,
        "error_details": result.error_details,
    }


class SyncAlreadyRunning(Exception):
    def __init__(self, mapping: SabitoMapping, running_run: SyncRun | None):
        self.mapping = mapping
        self.running_run = running_run
        since = f" since {running_run.started_at:%Y-%m-%d %H:%M:%S} UTC" if running_run else ""
        super().__init__(f"A sync is already running for {mapping.business_name}{since}")


class RunTakenOver(Exception):
    """This run was declared stale and taken over by another worker: stop writing."""


class RunNotQueued(Exception):
    """The queued run this task was to start is no longer queued: it was cancelled
    before a worker took it, or a redelivered task finds it already done."""

    def __init__(self, run: SyncRun):
        self.run = run
        super().__init__(f"Run {run.pk} is {run.status}, not queued; nothing to start")


def already_running_result(exc: SyncAlreadyRunning) -> SyncResult:
    return SyncResult(
        business_id=exc.mapping.sabito_business_id,
        business_name=exc.mapping.business_name,
        error=str(exc),
        already_running=True,
        run_id=str(exc.running_run.pk) if exc.running_run is not None else None,
    )


def result_data(result: SyncResult) -> dict[str, Any]:
    """The guide's per-mapping result as plain JSON data: what the task returns, what
    `sabito_sync --json` prints and what the API's sync answers carry. `markedMissing`
    appears only when non-zero, `error` only when the sync did not succeed."""
    data: dict[str, Any] = {
        "success": result.success,
        "businessId": result.business_id,
        "customersProcessed": result.processed,
        "created": result.created,
        "updated": result.updated,
        "skipped": result.skipped,
        "errors": result.errors,
        "errorDetails": [
            {
                "sabitoCustomerId": detail.get("sabitoCustomerId"),
                "email": detail.get("email"),
                "reason": detail.get("reason"),
            }
            for detail in result.error_details
        ],
    }
    if result.marked_missing:
        data["markedMissing"] = result.marked_missing
    if not result.success:
        data["error"] = result.error
    return data


# What a run that did not succeed says when its row carries no error of its own.
ENDED_WITHOUT_ERROR_TEXT: dict[str, str] = {
    SyncRun.Status.CANCELLED: "Cancelled on request; what it wrote stays, and the watermark did not move.",
    SyncRun.Status.INTERRUPTED: "Interrupted: its worker was shutting down; the sync resumes in a new run.",
}


def result_of_run(run: SyncRun) -> SyncResult:
    """A finished run's row as the result its sync returned, so one renderer serves
    both (the worker's return value is not kept: there is no result backend)."""
    status = run.status
    return SyncResult(
        business_id=run.mapping.sabito_business_id,
        business_name=run.mapping.business_name,
        success=status == SyncRun.Status.SUCCEEDED,
        created=run.created,
        updated=run.updated,
        skipped=run.skipped,
        errors=run.errors,
        marked_missing=run.marked_missing,
        error_details=run.error_details if isinstance(run.error_details, list) else [],
        error=None
        if status == SyncRun.Status.SUCCEEDED
        else (run.error_message or ENDED_WITHOUT_ERROR_TEXT.get(status) or f"The run ended {status}."),
        already_running=status == SyncRun.Status.ALREADY_RUNNING,
        stopped=status if status in (SyncRun.Status.CANCELLED, SyncRun.Status.INTERRUPTED) else None,
        run_id=str(run.pk),
    )
