"""The Sabito sync engine.

For one mapping a sync reads top to bottom: open a `SyncRun` (the per-mapping
lock), fetch Sabito's customers page by page, validate each record, match it to a
customer of the mapping's tenant, write the page in one transaction, and finally
record the result and, only if every page was fetched and written, move the
incremental watermark.
"""

from __future__ import annotations

import contextvars
import logging
import operator
import queue
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Iterable, Iterator

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from . import bulk
from . import logcontext, signals as sync_signals  # operations hooks: log context, host signals
from .client import CustomerPage, SabitoClient, SabitoError, format_timestamp
from .conf import SabitoSettings, load_sabito_settings
from .models import Customer, SabitoMapping, SyncRun

logger = logging.getLogger("sabito_sync.sync")

# The guide's log lines all start with this, so operators can grep one word.
LOG_PREFIX = "[Sabito Sync]"

# A run keeps every error in its counters but stores the details of the first
# ones only, so a feed of garbage cannot grow one row without bound.
MAX_STORED_ERROR_DETAILS = 1000

# Pages fetched and validated ahead of the one being written; the thread doing it
# gets this long to notice a stop (it may be inside a request) before it is left behind.
PREFETCH_PAGES = 2
PREFETCH_STOP_WAIT_SECONDS = 5.0

# Sabito record key → Customer field, for the plain string fields of the guide's table.
SABITO_STRING_FIELDS = {
    "email": "email",
    "name": "name",
    "phone": "phone",
    "address": "address",
    "city": "city",
    "state": "state",
    "country": "country",
    "sourceReferralId": "sabito_source_referral_id",
    "sourceType": "sabito_source_type",
}

# (Sabito key, Customer field, the field's max_length) for the loop over each record.
STRING_FIELD_LIMITS = tuple(
    (key, name, Customer._meta.get_field(name).max_length) for key, name in SABITO_STRING_FIELDS.items()
)


class EmailAddressValidator(EmailValidator):
    """Django's email rules, checked faster: the patterns compiled up front rather than
    looked up through lazy objects on every call, and each domain's verdict remembered,
    since a feed's customers share a handful of domains and the domain is the slow half."""

    user_regex = re.compile(EmailValidator.user_regex.pattern, EmailValidator.user_regex.flags)
    domain_regex = re.compile(EmailValidator.domain_regex.pattern, EmailValidator.domain_regex.flags)
    remembered_domains = 10_000

    def __init__(self):
        super().__init__()
        self._domain_verdicts: dict[str, bool] = {}

    def validate_domain_part(self, domain_part: str) -> bool:
        verdict = self._domain_verdicts.get(domain_part)
        if verdict is None:
            verdict = super().validate_domain_part(domain_part)
            if len(self._domain_verdicts) < self.remembered_domains:
                self._domain_verdicts[domain_part] = verdict
        return verdict


validate_email_address = EmailAddressValidator()

# Every Customer field a sync owns; a record updates a customer only if one differs.
SYNCED_FIELDS = (
    *SABITO_STRING_FIELDS.values(),
    "sabito_customer_id",
    "how_did_you_hear",
    "sabito_business_id",
    "sabito_missing_since",
)
synced_values = operator.itemgetter(*SYNCED_FIELDS)  # a record's values as a tuple, in that order
SABITO_ID_POSITION = SYNCED_FIELDS.index("sabito_customer_id")

MISSING_BATCH_SIZE = 1000


class SyncAlreadyRunning(Exception):
    def __init__(self, mapping: SabitoMapping, running_run: SyncRun | None):
        self.mapping = mapping
        self.running_run = running_run
        since = f" since {running_run.started_at:%Y-%m-%d %H:%M:%S} UTC" if running_run else ""
        super().__init__(f"A sync is already running for {mapping.business_name}{since}")


class RunTakenOver(Exception):
    """This run was declared stale and taken over by another worker: stop writing."""


class InvalidRecord(ValueError):
    pass


@dataclass
class SyncResult:
    mapping_id: str
    business_id: str
    business_name: str
    run_id: str | None = None
    success: bool = False
    processed: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: int = 0
    marked_missing: int = 0
    error_details: list[dict] = field(default_factory=list)
    error: str | None = None
    # Whether trying again later may help (HTTP trouble, lost database connection),
    # as opposed to a rejected key or a lock held by another run.
    retryable: bool = False
    already_running: bool = False

    def as_dict(self) -> dict:
        """The per-mapping result exactly as the guide's API shows it."""
        result = {
            "success": self.success,
            "businessId": self.business_id,
            "customersProcessed": self.processed,
            "created": self.created,
            "updated": self.updated,
            "skipped": self.skipped,
            "errors": self.errors,
            "errorDetails": self.error_details,
        }
        if self.marked_missing:
            result["markedMissing"] = self.marked_missing
        if not self.success:
            result["error"] = self.error
        return result

    def counters_text(self) -> str:
        return (
            f"{{ processed: {self.processed}, created: {self.created}, updated: {self.updated}, "
            f"skipped: {self.skipped}, errors: {self.errors} }}"
        )

    def add_error(self, detail: dict) -> None:
        self.errors += 1
        if len(self.error_details) < MAX_STORED_ERROR_DETAILS:
            self.error_details.append(detail)


def sabito_client(sabito: SabitoSettings | None = None) -> SabitoClient:
    sabito = sabito or load_sabito_settings()
    return SabitoClient(
        base_url=sabito.api_url,
        api_key=sabito.api_key,
        page_size=sabito.page_size,
        connect_timeout=sabito.connect_timeout,
        read_timeout=sabito.read_timeout,
        max_retries=sabito.max_retries,
        retry_backoff=sabito.retry_backoff,
    )


# --- The whole sync of one mapping ----------------------------------------------------


@logcontext.sync_log_context  # operations hook: every log line of the sync carries its ids
def sync_mapping(
    *,
    mapping: SabitoMapping,
    full_sync: bool = False,
    trigger: str = SyncRun.Trigger.CLI,
    client: SabitoClient | None = None,
    on_page: Callable[[SyncResult], None] | None = None,
) -> SyncResult:
    """Sync one mapping's customers from Sabito. Raises `SyncAlreadyRunning` if another
    run holds the mapping; every other failure is reported in the returned result."""
    sabito = load_sabito_settings()
    updated_after = None if full_sync else mapping.last_synced_at
    run = start_run(
        mapping=mapping,
        full_sync=full_sync,
        trigger=trigger,
        updated_after=updated_after,
        sabito=sabito,
        note=mapping.watermark_reset_reason if updated_after is None else "",
    )
    logcontext.bind(run_id=run.pk)  # operations hook
    result = SyncResult(
        mapping_id=str(mapping.pk),
        business_id=mapping.sabito_business_id,
        business_name=mapping.business_name,
        run_id=str(run.pk),
    )
    if full_sync:
        kind = "full"
    elif updated_after is None:
        kind = "incremental, first sync: fetching everything"
    else:
        kind = f"incremental, updated after {format_timestamp(updated_after)}"
    logger.info(
        "%s Starting sync for business: %s (%s) [%s]", LOG_PREFIX, mapping.business_name, mapping.sabito_business_id, kind
    )

    own_client = client is None
    client = client or sabito_client(sabito)
    seen_ids: set[str] = set()
    try:
        with prefetched_pages(client, business_id=mapping.sabito_business_id, updated_after=updated_after) as pages:
            for page in pages:
                logger.info("%s Found %d customers to sync (offset %d)", LOG_PREFIX, len(page.records), page.offset)
                write_page(
                    run=run,
                    mapping=mapping,
                    records=page.records,
                    checked=page.checked,
                    seen_ids=seen_ids,
                    result=result,
                )
                if on_page is not None:
                    on_page(result)
    except SabitoError as exc:
        result.error, result.retryable = str(exc), exc.retryable
    except RunTakenOver:
        result.error = "This run stopped making progress and was taken over by another run."
    except DatabaseError as exc:
        result.error, result.retryable = f"Database error: {exc}", True
    except Exception as exc:  # a bug must not leave the run "running" forever
        logger.exception("%s Unexpected error while syncing %s", LOG_PREFIX, mapping.business_name)
        result.error = f"Unexpected error: {exc.__class__.__name__}: {exc}"
    except BaseException:
        # Interrupted (Ctrl-C, worker shutdown): record it, keep the watermark, re-raise.
        finish_run(run=run, mapping=mapping, result=_failed(result, "Interrupted before completion."), watermark=None)
        raise
    finally:
        if own_client:
            client.close()

    if result.error is None:
        result.success = True
        watermark = run.started_at - timedelta(seconds=sabito.overlap_seconds)
        if full_sync:
            result.marked_missing = mark_missing_customers(mapping=mapping, returned_ids=seen_ids)
    else:
        watermark = None
    finish_run(run=run, mapping=mapping, result=result, watermark=watermark)
    sync_signals.run_finished(mapping=mapping, result=result)  # operations hook: sync_finished, alerts

    if result.success:
        logger.info("%s Sync completed for %s: %s", LOG_PREFIX, mapping.business_name, result.counters_text())
    else:
        logger.error(
            "%s Sync failed for %s: %s (so far: %s; watermark unchanged)",
            LOG_PREFIX,
            mapping.business_name,
            result.error,
            result.counters_text(),
        )
    return result


def _failed(result: SyncResult, error: str) -> SyncResult:
    result.success, result.error = False, error
    return result


def sync_all_mappings(
    *,
    full_sync: bool = False,
    trigger: str = SyncRun.Trigger.CLI,
    mappings: Iterable[SabitoMapping] | None = None,
    client: SabitoClient | None = None,
) -> list[SyncResult]:
    """Sync every given (default: every active) mapping in turn; one failing mapping
    never stops the others."""
    logger.info("%s Starting sync for all tenants...", LOG_PREFIX)
    if mappings is None:
        mappings = SabitoMapping.objects.filter(is_active=True).select_related("tenant")
    mappings = list(mappings)
    logger.info("%s Found %d tenant mappings to sync", LOG_PREFIX, len(mappings))

    results = []
    for mapping in mappings:
        try:
            results.append(sync_mapping(mapping=mapping, full_sync=full_sync, trigger=trigger, client=client))
        except SyncAlreadyRunning as exc:
            logger.warning("%s %s", LOG_PREFIX, exc)
            results.append(already_running_result(exc))
    log_all_completed(results)
    return results


def already_running_result(exc: SyncAlreadyRunning) -> SyncResult:
    return SyncResult(
        mapping_id=str(exc.mapping.pk),
        business_id=exc.mapping.sabito_business_id,
        business_name=exc.mapping.business_name,
        error=str(exc),
        already_running=True,
    )


def log_all_completed(results: list[SyncResult]) -> None:
    logger.info(
        "%s All tenants sync completed: { totalTenants: %d, totalCreated: %d, totalUpdated: %d, totalErrors: %d }",
        LOG_PREFIX,
        len(results),
        sum(r.created for r in results),
        sum(r.updated for r in results),
        sum(r.errors + (0 if r.success else 1) for r in results),
    )


# --- The run: lock, heartbeat, result ---------------------------------------------------


def stale_heartbeat_cutoff(sabito: SabitoSettings) -> datetime:
    """A running run whose heartbeat is older than this belongs to a worker that
    died: it no longer holds its mapping, and the next sync takes it over."""
    return timezone.now() - timedelta(seconds=sabito.stale_run_after_seconds)


def start_run(
    *,
    mapping: SabitoMapping,
    full_sync: bool,
    trigger: str,
    updated_after: datetime | None,
    sabito: SabitoSettings,
    note: str = "",
) -> SyncRun:
    """Insert the mapping's running `SyncRun`. The partial unique constraint on
    running runs is the lock: the insert fails while another run holds the mapping,
    whichever process or host it runs on. A holder whose heartbeat is older than the
    stale limit belonged to a worker that died; it is marked failed and taken over."""
    stale_before = stale_heartbeat_cutoff(sabito)
    for _attempt in range(3):
        now = timezone.now()
        try:
            with transaction.atomic():
                return SyncRun.objects.create(
                    mapping=mapping,
                    full_sync=full_sync,
                    trigger=trigger,
                    status=SyncRun.Status.RUNNING,
                    started_at=now,
                    heartbeat_at=now,
                    updated_after=updated_after,
                    note=note,
                )
        except IntegrityError:
            holder = SyncRun.objects.filter(mapping=mapping, status=SyncRun.Status.RUNNING).first()
            if holder is None:
                continue  # it finished between our insert and our look
            if holder.heartbeat_at >= stale_before:
                record_already_running(mapping=mapping, full_sync=full_sync, trigger=trigger, holder=holder)
                raise SyncAlreadyRunning(mapping, holder) from None
            logger.warning(
                "%s Taking over stale run %s of %s: no progress since %s",
                LOG_PREFIX,
                holder.pk,
                mapping.business_name,
                holder.heartbeat_at.isoformat(),
            )
            # Conditional on the heartbeat we saw, so two contenders cannot both win.
            SyncRun.objects.filter(pk=holder.pk, status=SyncRun.Status.RUNNING, heartbeat_at=holder.heartbeat_at).update(
                status=SyncRun.Status.FAILED,
                finished_at=now,
                error_message=(
                    f"Abandoned: no progress since {holder.heartbeat_at.isoformat()} "
                    "(the worker probably died); the watermark was not moved."
                ),
            )
    holder = SyncRun.objects.filter(mapping=mapping, status=SyncRun.Status.RUNNING).first()
    raise SyncAlreadyRunning(mapping, holder)


def record_already_running(*, mapping: SabitoMapping, full_sync: bool, trigger: str, holder: SyncRun) -> None:
    now = timezone.now()
    SyncRun.objects.create(
        mapping=mapping,
        full_sync=full_sync,
        trigger=trigger,
        status=SyncRun.Status.ALREADY_RUNNING,
        started_at=now,
        finished_at=now,
        heartbeat_at=now,
        error_message=f"Not started: run {holder.pk} has held this mapping since {holder.started_at.isoformat()}.",
    )


def finish_run(*, run: SyncRun, mapping: SabitoMapping, result: SyncResult, watermark: datetime | None) -> None:
    """Store the run's outcome and the mapping's summary; move the watermark only
    when given one (a complete, successful run). If this run was taken over as
    stale meanwhile, nothing is written: the other run owns the mapping now."""
    for attempt in (1, 2):
        try:
            record_outcome(run=run, mapping=mapping, result=result, watermark=watermark)
            return
        except DatabaseError:
            if attempt == 2 or connection.in_atomic_block:
                # Still gone: the run stays "running" until its heartbeat goes
                # stale and the next run takes it over; the watermark never moved.
                logger.exception("%s Could not record the outcome of run %s", LOG_PREFIX, run.pk)
                return
            # A dropped connection (that may be why the sync failed) is dead for
            # good in this process: open a fresh one and try once more.
            logger.warning("%s Reconnecting to the database to record run %s", LOG_PREFIX, run.pk)
            connection.close()


def record_outcome(*, run: SyncRun, mapping: SabitoMapping, result: SyncResult, watermark: datetime | None) -> None:
    finished_at = timezone.now()
    status = SyncRun.Status.SUCCEEDED if result.success else SyncRun.Status.FAILED
    with transaction.atomic():
        still_ours = SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).update(
            status=status,
            finished_at=finished_at,
            heartbeat_at=finished_at,
            **run_counters(result),
            error_message=result.error or "",
        )
        if not still_ours:
            logger.warning("%s Run %s was taken over; its outcome is not recorded", LOG_PREFIX, run.pk)
            return
        locked = SabitoMapping.objects.select_for_update().get(pk=mapping.pk)
        metadata = dict(locked.metadata or {})
        summary = {
            "success": result.success,
            "fullSync": run.full_sync,
            "customersProcessed": result.processed,
            "created": result.created,
            "updated": result.updated,
            "skipped": result.skipped,
            "errors": result.errors,
            "syncedAt": format_timestamp(finished_at),
        }
        if not result.success:
            summary["error"] = result.error
        metadata["lastSyncResult"] = summary
        # A mapping re-pointed while this run started keeps its reset watermark: this
        # run read the business (or wrote the tenant) it no longer maps.
        if watermark is not None and same_target(locked, mapping):
            metadata["lastSyncedAt"] = format_timestamp(watermark)
            metadata.pop(SabitoMapping.WATERMARK_RESET_KEY, None)
        locked.metadata = metadata
        locked.save(update_fields=["metadata", "updated_at"])
        mapping.metadata = metadata


def same_target(stored: SabitoMapping, synced: SabitoMapping) -> bool:
    return (stored.sabito_business_id, stored.tenant_id) == (synced.sabito_business_id, synced.tenant_id)


def run_counters(result: SyncResult) -> dict:
    return {
        "customers_processed": result.processed,
        "created": result.created,
        "updated": result.updated,
        "skipped": result.skipped,
        "errors": result.errors,
        "marked_missing": result.marked_missing,
        "error_details": result.error_details,
    }


def mark_missing_customers(*, mapping: SabitoMapping, returned_ids: set[str]) -> int:
    """After a complete, successful full sync: flag the mapping's linked customers
    that Sabito no longer returned. Only such a run can tell (the incremental feed
    never shows deletions), and the customers are kept: a CRM record may carry
    history that matters more than Sabito's deletion."""
    linked = (
        Customer.objects.filter(
            tenant_id=mapping.tenant_id,
            sabito_business_id=mapping.sabito_business_id,
            sabito_customer_id__isnull=False,
            sabito_missing_since__isnull=True,
        )
        .values_list("pk", "sabito_customer_id")
        .iterator(chunk_size=5000)
    )
    missing = [pk for pk, sabito_id in linked if sabito_id not in returned_ids]
    now = timezone.now()
    for start in range(0, len(missing), MISSING_BATCH_SIZE):
        Customer.objects.filter(pk__in=missing[start : start + MISSING_BATCH_SIZE]).update(
            sabito_missing_since=now, updated_at=now
        )
    if missing:
        logger.info("%s %d customers of %s are no longer in Sabito; marked missing", LOG_PREFIX, len(missing), mapping.business_name)
    return len(missing)



# --- Fetching ahead: the next pages arrive while this one is written ---------------------


@dataclass
class CheckedPage:
    """A page of Sabito records, each already turned into its Customer values (a dict)
    or the InvalidRecord saying why it cannot be."""

    offset: int
    records: list
    checked: list


@contextmanager
def prefetched_pages(client: SabitoClient, *, business_id: str, updated_after: datetime | None):
    """Sabito's pages in order, fetched and validated by a background thread up to
    PREFETCH_PAGES ahead of the page being written.

    Writing a page is mostly waiting for the database, fetching one mostly waiting
    for Sabito; done one after the other a sync takes the sum of both, done side by
    side only the longer. The queue between them is bounded, so memory stays a few
    pages whatever the feed's length. An error while fetching (a SabitoError, say)
    is raised here, in the caller's thread, when the caller reaches that page."""
    pages = client.iter_customer_pages(business_id=business_id, updated_after=updated_after)
    prefetcher = PagePrefetcher(pages, check=lambda records: check_records(records, business_id=business_id))
    try:
        yield prefetcher
    finally:
        prefetcher.stop()


class PagePrefetcher:
    """Runs a page iterator in a daemon thread, at most `depth` pages ahead of the
    caller, who iterates the prefetcher to get the pages in order."""

    PAGE, END, ERROR = "page", "end", "error"

    def __init__(self, pages: Iterator[CustomerPage], *, check: Callable[[list], list], depth: int = PREFETCH_PAGES):
        self._pages = pages
        self._check = check
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stopping = threading.Event()
        # In a copy of the caller's context: the client's log lines keep the sync's ids (operations hook).
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._fetch,), name="sabito-prefetch", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> Iterator[CheckedPage]:
        while True:
            kind, item = self._queue.get()
            if kind == self.END:
                return
            if kind == self.ERROR:
                raise item
            yield item

    def stop(self) -> None:
        """Stop fetching (the caller is done, or failed) and wait briefly for the thread,
        which finishes its current request at most: it is a daemon, it never blocks exit."""
        self._stopping.set()
        self._thread.join(timeout=PREFETCH_STOP_WAIT_SECONDS)

    def _fetch(self) -> None:
        try:
            for page in self._pages:
                checked = CheckedPage(offset=page.offset, records=page.records, checked=self._check(page.records))
                if not self._put((self.PAGE, checked)):
                    return
            self._put((self.END, None))
        except BaseException as exc:  # handed over and raised in the caller's thread
            self._put((self.ERROR, exc))
        finally:
            close = getattr(self._pages, "close", None)
            if close is not None:
                close()

    def _put(self, item) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def check_records(records: list, *, business_id: str) -> list:
    """Each record's Customer values, or the InvalidRecord saying why it has none."""
    checked: list = []
    for record in records:
        try:
            checked.append(customer_values(record, business_id=business_id))
        except InvalidRecord as exc:
            checked.append(exc)
    return checked


# --- One page: validate, match, write ----------------------------------------------------


@dataclass
class PagePlan:
    creates: list[StoredCustomer] = field(default_factory=list)
    updates: list[StoredCustomer] = field(default_factory=list)
    skipped: int = 0
    errors: list[dict] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class StoredCustomer:
    """A customer as a page sees it: its primary key (None until the page's insert
    creates it) and its SYNCED_FIELDS values, in order. Most records of a re-sync
    are skipped, and comparing two tuples costs far less than building a model
    instance for every candidate."""

    pk: object | None
    values: tuple

    @property
    def sabito_customer_id(self) -> str | None:
        return self.values[SABITO_ID_POSITION]

    def __str__(self) -> str:
        if self.pk is None:
            return f"created from Sabito id {self.sabito_customer_id} in this sync"
        return str(self.pk)


def write_page(
    *,
    run: SyncRun,
    mapping: SabitoMapping,
    records: list,
    seen_ids: set[str],
    result: SyncResult,
    checked: list | None = None,
) -> None:
    """Validate (unless `checked` holds the records' values already), match and write
    one page in one transaction, together with the run's counters and heartbeat, so
    the run always describes what is committed."""
    if checked is None:
        checked = check_records(records, business_id=mapping.sabito_business_id)
    valid: list[dict] = []
    page_errors: list[dict] = []
    for record, values in zip(records, checked):
        if isinstance(values, InvalidRecord):
            page_errors.append(error_detail(record, str(values)))
            # Still a record Sabito has: its customer must not be marked missing.
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                seen_ids.add(record["id"].strip())
            continue
        # Overlapping or drifting pages may repeat a record: process it once per sync.
        if values["sabito_customer_id"] in seen_ids:
            continue
        seen_ids.add(values["sabito_customer_id"])
        valid.append(values)

    try:
        plan = write_planned_page(run=run, result=result, tenant_id=mapping.tenant_id, valid=valid, page_errors=page_errors)
    except IntegrityError:
        # Someone else (another mapping of this tenant, a person) wrote a matching
        # customer after we looked: look again and write record by record.
        plan = write_page_record_by_record(run=run, result=result, tenant_id=mapping.tenant_id, valid=valid, page_errors=page_errors)
    apply_plan_to_result(plan, result)
    sync_signals.page_written(  # operations hook: customers_synced
        mapping=mapping,
        run_id=run.pk,
        created_sabito_ids=[customer.sabito_customer_id for customer in plan.creates],
        updated_ids=[customer.pk for customer in plan.updates],
    )


def write_planned_page(*, run, result, tenant_id, valid, page_errors) -> PagePlan:
    """The whole page in the same statements, whatever it holds: find the candidates,
    write the new and changed customers, record the run's progress."""
    with transaction.atomic():
        plan = plan_page(tenant_id=tenant_id, valid=valid)
        plan.errors = page_errors + plan.errors
        updated = bulk.write_customers(
            tenant_id=tenant_id,
            creates=[customer.values for customer in plan.creates],
            updates=[(customer.pk, *customer.values) for customer in plan.updates],
            fields=SYNCED_FIELDS,
            now=timezone.now(),
        )
        if updated != len(plan.updates):
            # A customer was deleted after we looked; the counters must not claim it.
            raise IntegrityError(f"{len(plan.updates) - updated} customers to update were deleted meanwhile")
        record_progress(run=run, result=result, plan=plan)
    return plan


def write_page_record_by_record(*, run, result, tenant_id, valid, page_errors) -> PagePlan:
    with transaction.atomic():
        plan = plan_page(tenant_id=tenant_id, valid=valid)
        written = PagePlan(skipped=plan.skipped, errors=page_errors + plan.errors)
        now = timezone.now()
        for customer in plan.creates + plan.updates:
            values = dict(zip(SYNCED_FIELDS, customer.values))
            try:
                with transaction.atomic():
                    if customer.pk is None:
                        Customer.objects.create(tenant_id=tenant_id, **values)
                    elif not Customer.objects.filter(pk=customer.pk, tenant_id=tenant_id).update(**values, updated_at=now):
                        raise IntegrityError(f"customer {customer.pk} was deleted meanwhile")
            except IntegrityError as exc:
                written.errors.append(
                    {
                        "sabitoCustomerId": values["sabito_customer_id"],
                        "email": values["email"],
                        "reason": f"conflicts with another customer of this tenant written meanwhile: {exc}",
                    }
                )
                continue
            (written.creates if customer.pk is None else written.updates).append(customer)
        record_progress(run=run, result=result, plan=written)
    return written


def record_progress(*, run: SyncRun, result: SyncResult, plan: PagePlan) -> None:
    """Heartbeat and counters of the run, inside the page's transaction."""
    projected = SyncResult(
        mapping_id=result.mapping_id,
        business_id=result.business_id,
        business_name=result.business_name,
        error_details=list(result.error_details) if plan.errors else result.error_details,
    )
    apply_plan_to_result(plan, projected, base=result)
    counters = run_counters(projected)
    if len(projected.error_details) == len(result.error_details):
        # Unchanged: not worth sending up to MAX_STORED_ERROR_DETAILS again every page.
        del counters["error_details"]
    if not bulk.record_run_progress(run_id=run.pk, values={"heartbeat_at": timezone.now(), **counters}):
        raise RunTakenOver()


def apply_plan_to_result(plan: PagePlan, target: SyncResult, base: SyncResult | None = None) -> None:
    base = base or target
    target.created = base.created + len(plan.creates)
    target.updated = base.updated + len(plan.updates)
    target.skipped = base.skipped + plan.skipped
    target.errors = base.errors
    for detail in plan.errors:
        target.add_error(detail)
    target.processed = target.created + target.updated + target.skipped + target.errors


def plan_page(*, tenant_id, valid: list[dict]) -> PagePlan:
    """Decide create / update / skip / error for each valid record of a page, with
    one lookup of the tenant's candidate customers for the whole page."""
    by_id, by_email = load_candidates(tenant_id=tenant_id, valid=valid)
    plan = PagePlan()
    for values in valid:
        sabito_id = values["sabito_customer_id"]
        email_key = values["email"].lower()
        id_match = by_id.get(sabito_id)
        email_match = by_email.get(email_key) if email_key else None

        if id_match is not None and email_match is not None and id_match is not email_match:
            plan.errors.append(
                error_detail_from_values(
                    values,
                    f"Sabito id {sabito_id} belongs to customer {id_match} but email {values['email']} "
                    f"belongs to another customer ({email_match}); not merging them",
                )
            )
            continue
        # The Sabito id is tried first because emails change and are shared by
        # mistake; the id is the one thing Sabito promises stays the record's.
        customer = id_match or email_match
        synced = synced_values(values)
        if customer is None:
            customer = StoredCustomer(pk=None, values=synced)
            plan.creates.append(customer)
            by_id[sabito_id] = customer
            if email_key:
                by_email[email_key] = customer
            continue
        if customer.sabito_customer_id not in (None, sabito_id):
            plan.errors.append(
                error_detail_from_values(
                    values,
                    f"email {values['email']} already belongs to the customer linked to Sabito id "
                    f"{customer.sabito_customer_id}",
                )
            )
            continue
        if customer.values == synced:
            plan.skipped += 1
            continue
        customer.values = synced
        # Keep the old email key too: its row still holds that email until the page
        # commits, so another record claiming it now must be a conflict, not a create.
        by_id[sabito_id] = customer
        if email_key:
            by_email.setdefault(email_key, customer)
        if customer.pk is None:
            continue  # created earlier in this page; the insert carries the change
        plan.updates.append(customer)
    return plan


def load_candidates(*, tenant_id, valid: list[dict]) -> tuple[dict[str, StoredCustomer], dict[str, StoredCustomer]]:
    """The tenant's customers the page's records may match, keyed by Sabito id and by
    lowercased email, in one query; a customer found both ways is one object."""
    rows = bulk.find_candidates(
        tenant_id=tenant_id,
        keys=[(values["sabito_customer_id"], values["email"].lower()) for values in valid],
        fields=SYNCED_FIELDS,
    )
    by_id: dict[str, StoredCustomer] = {}
    by_email: dict[str, StoredCustomer] = {}
    for pk, matched_by_id, _email_key, *stored in rows:
        if matched_by_id:
            customer = StoredCustomer(pk=pk, values=tuple(stored))
            by_id[customer.sabito_customer_id] = customer
    for pk, matched_by_id, email_key, *stored in rows:
        if not matched_by_id:
            # The Sabito id is unique in the tenant, so the customer it maps to, if
            # any, is this very row.
            sabito_id = stored[SABITO_ID_POSITION]
            customer = by_id.get(sabito_id) if sabito_id is not None else None
            by_email[email_key] = customer or StoredCustomer(pk=pk, values=tuple(stored))
    return by_id, by_email


def customer_values(record, *, business_id: str) -> dict:
    """The Customer field values for one Sabito record, per the guide's mapping
    table. Raises InvalidRecord with a reason a person can act on."""
    if not isinstance(record, dict):
        raise InvalidRecord(f"record is a {json_type(record)}, not an object")
    raw_id = record.get("id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        raise InvalidRecord("record has no id")
    if not isinstance(raw_id, str):
        raise InvalidRecord(f"id must be a string, got {json_type(raw_id)}")
    values = {"sabito_customer_id": clean_string("id", raw_id, "sabito_customer_id")}
    # The loop runs ten times per record and a sync may see a million records: the
    # common case (a clean string) is checked inline, clean_string() explains the rest.
    for key, field_name, max_length in STRING_FIELD_LIMITS:
        raw = record.get(key)
        if raw is None:
            values[field_name] = ""
        elif isinstance(raw, str):
            value = raw.strip()
            if len(value) > max_length or "\x00" in value:
                value = clean_string(key, raw, field_name)
            values[field_name] = value
        else:
            raise InvalidRecord(f"{key} must be a string, got {json_type(raw)}")
    if values["email"]:
        try:
            validate_email_address(values["email"])
        except ValidationError:
            raise InvalidRecord(f"email {values['email']!r} is not a valid address") from None
    values["country"] = values["country"] or Customer.DEFAULT_COUNTRY
    values["how_did_you_hear"] = Customer.HOW_DID_YOU_HEAR_SABITO
    values["sabito_business_id"] = business_id
    values["sabito_missing_since"] = None  # Sabito has it (again)
    return values


def clean_string(key: str, raw: str, field_name: str) -> str:
    value = raw.strip()
    if "\x00" in value:
        # PostgreSQL cannot store NUL in text; rejecting beats silently altering it.
        raise InvalidRecord(f"{key} contains a NUL character")
    max_length = Customer._meta.get_field(field_name).max_length
    if len(value) > max_length:
        raise InvalidRecord(f"{key} is {len(value)} characters long; the limit is {max_length}")
    return value


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def error_detail(record, reason: str) -> dict:
    record = record if isinstance(record, dict) else {}
    raw_id, raw_email = record.get("id"), record.get("email")
    return {
        "sabitoCustomerId": str(raw_id)[:100] if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else None,
        "email": raw_email[:254] if isinstance(raw_email, str) else None,
        "reason": reason,
    }


def error_detail_from_values(values: dict, reason: str) -> dict:
    return {"sabitoCustomerId": values["sabito_customer_id"], "email": values["email"] or None, "reason": reason}
