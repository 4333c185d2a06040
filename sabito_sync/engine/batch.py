"""A batch of pages matched to the tenant's customers and written in one transaction
with the run's progress: its plan (create, update, skip, defer, error) and the write.
Why it is written so, email moves and a first load's batches included:
docs/architecture.md, "A batch's statements"."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import signals
from ..logs import LOG_PREFIX
from ..models import Customer, SabitoMapping, SyncRun
from ..runs import sql as run_sql
from ..runs.result import RunTakenOver, SyncResult, run_counters
from . import batch_sql
from .records import (
    EMAIL_POSITION,
    FINGERPRINT_POSITION,
    SABITO_ID_POSITION,
    SYNCED_FIELDS,
    WRITTEN_FIELDS,
    RejectedRecord,
    SabitoRecord,
    validate_records,
    values_error_detail,
    written_values,
)

logger = logging.getLogger("sabito_sync.sync")

# Records waiting for an address another customer still holds are kept in memory and in
# the run's checkpoint; past this many, a further one is an error at once.
MAX_DEFERRED_RECORDS = 1000


@dataclass
class BatchPlan:
    creates: list[StoredCustomer] = field(default_factory=list)
    updates: list[StoredCustomer] = field(default_factory=list)
    skipped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    # Records whose address a customer linked to another Sabito record holds: tried
    # again after the last batch (they count as what they finally become).
    deferred: list[dict[str, Any]] = field(default_factory=list)
    # Customers updated to another address: their old one is blanked first.
    releases: list[uuid.UUID | str] = field(default_factory=list)
    # Customers that already have their record's values, but not its fingerprint
    # (stored before fingerprints were, or Sabito sends the record's JSON otherwise
    # now): given it, so the next sync skips their record unread. Skipped, not updated.
    refreshes: list[StoredCustomer] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class StoredCustomer:
    """A customer as a batch sees it: its primary key (None until the batch's insert
    creates it) and its WRITTEN_FIELDS values, in order. Most records of a re-sync
    are skipped, and comparing two tuples costs far less than building a model
    instance for every candidate."""

    pk: uuid.UUID | str | None
    values: tuple[Any, ...]

    @property
    def sabito_customer_id(self) -> str | None:
        sabito_id: str | None = self.values[SABITO_ID_POSITION]
        return sabito_id

    def __str__(self) -> str:
        if self.pk is None:
            return f"created from Sabito id {self.sabito_customer_id} in this sync"
        return str(self.pk)


def write_batch(
    *,
    run: SyncRun,
    mapping: SabitoMapping,
    validated: Sequence[dict[str, Any] | RejectedRecord | SabitoRecord],
    seen_ids: set[str],
    result: SyncResult,
    pages: int,
    deferred: list[dict[str, Any]] | None = None,
    final: bool = False,
    fingerprints: list[str | None] | None = None,
    expect_stored: bool = False,
) -> None:
    """Match and write a batch of validated records (see `records.validate_records`),
    `pages` pages of the feed, in one transaction, together with the run's counters,
    pages done and checkpoint. Records kept waiting for an address are appended to
    `deferred`; with `final` (the retry after the last batch) nothing waits any more.

    With the records' `fingerprints` (in the same order, None for a record without),
    a record whose customer was written from the very same record is skipped as it
    is, and a record still as the client typed it (a SabitoRecord: the prefetcher
    leaves them so on a re-sync) is validated here, unless so skipped. The first
    batch of a sync looks fingerprints up if the sync `expect_stored` records."""
    # Mostly unchanged records so far (a re-sync): look their fingerprints up, and
    # have the lookup compare the others in the database. Mostly new or changed (a
    # first load, an incremental sync): the fingerprints would find nothing, and the
    # values would only make the lookup's parameter three times the size for nothing.
    unchanged_so_far = mostly_unchanged(result)
    look_up = unchanged_so_far if result.processed else expect_stored
    new_so_far = not final and (all_created(result) if result.processed else not expect_stored)
    known = find_stored(mapping=mapping, validated=validated, fingerprints=fingerprints if look_up else None)
    if fingerprints is not None:
        validated = validate_pending(mapping=mapping, validated=validated, fingerprints=fingerprints, known=known)
    valid: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    already_stored = 0
    # Every record but those `known` (skipped unread) is validated by now: by the
    # prefetcher, or just above.
    for position, values in enumerate(cast("Sequence[dict[str, Any] | RejectedRecord]", validated)):
        if known and position in known:
            if first_in_sync(known[position], seen_ids, final=final):
                already_stored += 1
            continue
        if isinstance(values, RejectedRecord):
            rejected.append(values.detail)
            # Still a record Sabito has: its customer must not be marked missing.
            if values.sabito_id is not None:
                seen_ids.add(values.sabito_id)
            continue
        if not first_in_sync(values["sabito_customer_id"], seen_ids, final=final):
            continue
        if "sabito_fingerprint" not in values:  # validated by a caller without fingerprints
            values["sabito_fingerprint"] = None
        valid.append(values)

    deferred = [] if deferred is None else deferred
    batch = Batch(
        run=run,
        result=result,
        tenant_id=mapping.tenant_id,
        valid=valid,
        rejected=rejected,
        already_stored=already_stored,
        pages=pages,
        may_defer=0 if final else MAX_DEFERRED_RECORDS - len(deferred),
        deferred_before=deferred,
        compare_in_database=unchanged_so_far,
    )
    plan = write_new_batch(batch) if new_so_far else None
    if plan is None:
        try:
            plan = write_planned_batch(batch)
        except IntegrityError:
            # Someone else (another mapping of this tenant, a person) wrote a matching
            # customer after we looked: look again and write record by record.
            plan = write_batch_record_by_record(batch)
    # Counted once the batch is committed: one rolled back (a refused insert, a
    # conflict at commit) did not do its pages.
    run.pages_done += pages
    deferred.extend(plan.deferred)
    apply_plan_to_result(plan, result)
    # The bulk writes send no post_save: the host learns of the batch's customers here.
    signals.page_written(
        mapping=mapping,
        run_id=run.pk,
        # A new customer's values are its record's: it has a Sabito id.
        created_sabito_ids=cast("list[str]", [customer.sabito_customer_id for customer in plan.creates]),
        updated_ids=[customer.pk for customer in plan.updates],
    )


def first_in_sync(sabito_id: str, seen_ids: set[str], *, final: bool) -> bool:
    """Whether this is the sync's first record with this Sabito id, noting it if so.
    Overlapping or drifting pages may repeat a record, in one batch or across batches:
    it is processed once per sync. The retry after the last batch (`final`) writes
    records already noted, each once."""
    if final:
        return True
    if sabito_id in seen_ids:
        return False
    seen_ids.add(sabito_id)
    return True


def mostly_unchanged(result: SyncResult) -> bool:
    """Whether most records of the sync so far were unchanged: a re-sync."""
    return result.skipped > result.created + result.updated


def all_created(result: SyncResult) -> bool:
    """Whether every record the sync wrote so far was new: a first load. One record
    that matched a customer says the tenant has some, and each batch written without
    looking would risk an insert refused (and redone) for the rest of the sync."""
    return result.created > 0 and not result.updated and not result.skipped


def find_stored(
    *,
    mapping: SabitoMapping,
    validated: Sequence[dict[str, Any] | RejectedRecord | SabitoRecord],
    fingerprints: list[str | None] | None,
) -> dict[int, str]:
    """The positions in the batch of the records whose customer was written from the
    very same record (the same fingerprint), each with its Sabito id: one statement,
    run with no fingerprints when there are none to look up, so that every batch
    costs the same statements."""
    found = batch_sql.find_fingerprinted(tenant_id=mapping.tenant_id, fingerprints=fingerprints or [])
    known: dict[int, str] = {}
    for position in found:
        values = validated[position]
        if type(values) is SabitoRecord:
            known[position] = values.id.strip()  # as validation makes it: what was stored
        elif type(values) is dict:
            known[position] = values["sabito_customer_id"]
    return known


def validate_pending(
    *,
    mapping: SabitoMapping,
    validated: Sequence[dict[str, Any] | RejectedRecord | SabitoRecord],
    fingerprints: list[str | None],
    known: dict[int, str],
) -> Sequence[dict[str, Any] | RejectedRecord | SabitoRecord]:
    """The batch's records with those still as the client typed them validated now,
    except those already stored (`known`), which stay as they are."""
    pending = [
        position for position, values in enumerate(validated) if type(values) is SabitoRecord and position not in known
    ]
    if not pending:
        return validated
    checked = validate_records(
        [validated[position] for position in pending],
        business_id=mapping.sabito_business_id,
        fingerprints=[fingerprints[position] for position in pending],
    )
    now_validated = list(validated)
    for position, values in zip(pending, checked, strict=True):
        now_validated[position] = values
    return now_validated


# --- Matching ---------------------------------------------------------------------------------


# A valid record of the batch with what matching reads of it, worked out once: its
# values, Sabito id, lowercased email ("" for none) and WRITTEN_FIELDS values. A plain
# tuple: a re-sync makes one per record.
BatchRecord = tuple[dict[str, Any], str, str, tuple[Any, ...]]


def plan_batch(
    *, tenant_id: uuid.UUID, valid: list[dict[str, Any]], may_defer: int = 0, compare_in_database: bool = False
) -> BatchPlan:
    """Decide create / update / skip / defer / error for each valid record of a batch,
    with one lookup of the tenant's candidate customers for the whole batch (one more
    in the rare batch where a customer expected to give up its address cannot).
    At most `may_defer` records are deferred; past that, a blocked one is an error.
    With `compare_in_database` the lookup tells which customers are unchanged (see
    `load_candidates`); the plan is the same either way."""
    records = batch_records(valid)
    # Each Sabito record's address as this batch leaves it: a customer whose own record
    # is in the batch with another address gives its old one up to whoever takes it.
    moving_to = {sabito_id: email_key for _values, sabito_id, email_key, _synced in records}
    for _attempt in range(3):
        plan, stuck = plan_batch_once(
            tenant_id=tenant_id, records=records, moving_to=moving_to, may_defer=may_defer, compare=compare_in_database
        )
        if not stuck:
            return plan
        # Customers that were to give their address up but do not (deferred or in
        # error themselves) keep it: plan again with them holding on.
        for sabito_id in stuck:
            moving_to.pop(sabito_id, None)
    return plan_batch_once(
        tenant_id=tenant_id, records=records, moving_to={}, may_defer=may_defer, compare=compare_in_database
    )[0]


def batch_records(valid: list[dict[str, Any]]) -> list[BatchRecord]:
    return [(values, values["sabito_customer_id"], values["email"].lower(), written_values(values)) for values in valid]


def plan_batch_once(
    *,
    tenant_id: uuid.UUID,
    records: list[BatchRecord],
    moving_to: dict[str, str],
    may_defer: int,
    compare: bool = False,
    look_up: bool = True,
) -> tuple[BatchPlan, set[str]]:
    """One planning pass; also returns the Sabito ids whose customers other records
    counted on to release an address but which did not move (deferred or in error).
    Without `look_up`, planned as if the tenant had none of the records' customers."""
    if look_up:
        by_id, by_email, unchanged = load_candidates(tenant_id=tenant_id, records=records, compare=compare)
    else:
        by_id, by_email, unchanged = {}, {}, set()
    plan = BatchPlan()
    relied_on: set[str] = set()
    for values, sabito_id, email_key, synced in records:
        if sabito_id in unchanged:
            plan.skipped += 1
            continue
        id_match = by_id.get(sabito_id)
        email_match = by_email.get(email_key) if email_key else None

        if email_match is not None and email_match is not id_match:
            holder_id = email_match.sabito_customer_id
            if holder_id is not None and holder_id != sabito_id:
                # The address belongs to another Sabito record's customer.
                if moving_to.get(holder_id, email_key) != email_key:
                    relied_on.add(holder_id)
                    email_match = None  # it moves elsewhere in this batch: released first
                elif len(plan.deferred) < may_defer:
                    plan.deferred.append(values)
                    continue
                else:
                    plan.errors.append(
                        values_error_detail(
                            values,
                            f"email {values['email']} already belongs to the customer linked to Sabito id {holder_id}, "
                            "whose Sabito record still has it; not moving it",
                        )
                    )
                    continue
            elif id_match is not None:
                plan.errors.append(
                    values_error_detail(
                        values,
                        f"Sabito id {sabito_id} belongs to customer {id_match} but email {values['email']} "
                        f"belongs to another customer ({email_match}), not linked to Sabito; not merging them",
                    )
                )
                continue
        # The Sabito id is tried first because emails change and are shared by
        # mistake; the id is the one thing Sabito promises stays the record's.
        customer = id_match or email_match
        if customer is None:
            customer = StoredCustomer(pk=None, values=synced)
            plan.creates.append(customer)
            by_id[sabito_id] = customer
            if email_key:
                by_email[email_key] = customer
            continue
        if customer.values == synced:
            plan.skipped += 1
            continue
        if customer.pk is not None and customer.values[:FINGERPRINT_POSITION] == synced[:FINGERPRINT_POSITION]:
            plan.skipped += 1
            if synced[FINGERPRINT_POSITION] is not None:
                customer.values = synced
                plan.refreshes.append(customer)
            continue
        old_email_key = customer.values[EMAIL_POSITION].lower()
        customer.values = synced
        by_id[sabito_id] = customer
        if email_key:
            by_email[email_key] = customer
        if customer.pk is None:
            continue  # created earlier in this batch; the insert carries the change
        if old_email_key and old_email_key != email_key:
            plan.releases.append(customer.pk)
        plan.updates.append(customer)
    moved = {customer.sabito_customer_id for customer in plan.updates + plan.creates}
    return plan, relied_on - moved


def load_candidates(
    *, tenant_id: uuid.UUID, records: list[BatchRecord], compare: bool = False
) -> tuple[dict[str, StoredCustomer], dict[str, StoredCustomer], set[str]]:
    """The tenant's customers the batch's records may match, keyed by Sabito id and by
    lowercased email, in one query; a customer found both ways is one object. And
    the Sabito ids whose customer already has exactly its record's values.

    Such a customer is only ever skipped: its own record is the one that could change
    it, and its address, held by a customer linked to a record that keeps it, can move
    to no one. So it is set apart as found, without an object: on a re-sync that is
    every customer, and making their objects was much of a batch's matching. With
    `compare` the database tells which they are (`find_candidates`' `expected`); else
    the rows are compared here."""
    # A record twice in a batch (never so, but) is matched in turn, against what the
    # one before it leaves: never set apart as unchanged.
    synced_by_id = {sabito_id: synced for _values, sabito_id, _email_key, synced in records}
    distinct = len(synced_by_id) == len(records)
    rows = batch_sql.find_candidates(
        tenant_id=tenant_id,
        keys=[(sabito_id, email_key) for _values, sabito_id, email_key, _synced in records],
        fields=WRITTEN_FIELDS,
        expected=[synced for *_, synced in records] if compare and distinct else None,
    )
    by_id: dict[str, StoredCustomer] = {}
    by_email: dict[str, StoredCustomer] = {}
    unchanged: set[str] = set()
    # A row is (pk, matched_by_id, email_key, unchanged, *values): a re-sync reads one
    # per record, so each is sliced, not unpacked and packed again.
    sabito_id_at = 4 + SABITO_ID_POSITION
    email_rows = []
    for row in rows:
        if not row[1]:
            email_rows.append(row)
        elif row[3]:
            unchanged.add(row[sabito_id_at])
        else:
            sabito_id, stored = row[sabito_id_at], row[4:]
            if distinct and stored == synced_by_id[sabito_id]:
                unchanged.add(sabito_id)
            else:
                by_id[sabito_id] = StoredCustomer(row[0], stored)
    for row in email_rows:
        # The Sabito id is unique in the tenant, so the customer it maps to, if any,
        # is this very row (an unchanged one has no object yet: this row makes it).
        sabito_id = row[sabito_id_at]
        customer = by_id.get(sabito_id) if sabito_id is not None else None
        by_email[row[2]] = customer or StoredCustomer(row[0], row[4:])
    return by_id, by_email, unchanged


# --- Writing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch of pages ready to be written: its valid records, those rejected (written
    as errors) and how many were found already stored (skipped), with the run it
    belongs to and how many records it may still defer."""

    run: SyncRun
    # The sync's result so far; the batch's counts are added once it is committed.
    result: SyncResult
    tenant_id: uuid.UUID
    valid: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    already_stored: int
    pages: int
    may_defer: int
    # The records the sync deferred before this batch (stored with its checkpoint).
    deferred_before: list[dict[str, Any]]
    # Whether the candidates query tells which customers are unchanged (a re-sync).
    compare_in_database: bool


def write_planned_batch(batch: Batch) -> BatchPlan:
    """The whole batch in the same statements, whatever it holds: find the candidates,
    write the new and changed customers, record the run's progress."""
    with transaction.atomic():
        plan = plan_batch(
            tenant_id=batch.tenant_id,
            valid=batch.valid,
            may_defer=batch.may_defer,
            compare_in_database=batch.compare_in_database,
        )
        write_plan(plan, batch)
    return plan


def write_new_batch(batch: Batch) -> BatchPlan | None:
    """A batch of a first load, written without looking for its customers: every
    record inserted as new, or None and nothing kept when it is not a batch of new
    customers (the tenant has one of them; records of the batch share an address),
    for the batch to be written as any other.

    The insert is the proof: the tenant's unique indexes on (tenant, Sabito id) and
    (tenant, lower(email)) take every new customer only if no customer of the tenant
    has its Sabito id or its address, which is exactly when the candidates query
    would have found nothing and the plan below is the one it would have given."""
    records = batch_records(batch.valid)
    # With no stored customers, no address moves: only records of the batch sharing one
    # are not created.
    plan, _stuck = plan_batch_once(
        tenant_id=batch.tenant_id, records=records, moving_to={}, may_defer=batch.may_defer, look_up=False
    )
    if len(plan.creates) != len(records):
        return None
    try:
        with transaction.atomic():
            write_plan(plan, batch)
    except IntegrityError as exc:
        logger.debug("%s A first load's batch holds customers the tenant had; looking them up: %s", LOG_PREFIX, exc)
        return None
    return plan


def write_plan(plan: BatchPlan, batch: Batch) -> None:
    """Write a batch's plan, inside the batch's transaction: the new and changed
    customers and the run's progress, with the batch's rejected records as errors
    and those already stored as skipped."""
    plan.errors = batch.rejected + plan.errors
    plan.skipped += batch.already_stored
    if plan.releases:
        batch_sql.release_emails(tenant_id=batch.tenant_id, customer_ids=plan.releases)
    updated = batch_sql.write_customers(
        tenant_id=batch.tenant_id,
        creates=[customer.values for customer in plan.creates],
        updates=[(customer.pk, *customer.values, True) for customer in plan.updates]
        + [(customer.pk, *customer.values, False) for customer in plan.refreshes],
        fields=WRITTEN_FIELDS,
        now=timezone.now(),
    )
    if updated != len(plan.updates) + len(plan.refreshes):
        # A customer was deleted (or, to be given a fingerprint, edited) after we
        # looked; the counters must not claim it.
        missing = len(plan.updates) + len(plan.refreshes) - updated
        raise IntegrityError(f"{missing} customers to update were deleted or edited meanwhile")
    record_progress(
        run=batch.run, result=batch.result, plan=plan, pages=batch.pages, deferred=batch.deferred_before + plan.deferred
    )


def write_batch_record_by_record(batch: Batch) -> BatchPlan:
    tenant_id = batch.tenant_id
    with transaction.atomic():
        plan = plan_batch(
            tenant_id=tenant_id,
            valid=batch.valid,
            may_defer=batch.may_defer,
            compare_in_database=batch.compare_in_database,
        )
        written = BatchPlan(
            skipped=plan.skipped + batch.already_stored, errors=batch.rejected + plan.errors, deferred=plan.deferred
        )
        now = timezone.now()
        if plan.releases:
            batch_sql.release_emails(tenant_id=tenant_id, customer_ids=plan.releases)
        for customer in plan.refreshes:
            # Only where the values are still the record's: a fingerprint vouches for them.
            values = dict(zip(WRITTEN_FIELDS, customer.values, strict=True))
            Customer.objects.filter(
                pk=cast("uuid.UUID | str", customer.pk),  # stored: only a stored customer is refreshed
                tenant_id=tenant_id,
                **{name: values[name] for name in SYNCED_FIELDS},
            ).update(sabito_fingerprint=values["sabito_fingerprint"])
        for customer in plan.creates + plan.updates:
            values = dict(zip(WRITTEN_FIELDS, customer.values, strict=True))
            try:
                with transaction.atomic():
                    if customer.pk is None:
                        Customer.objects.create(tenant_id=tenant_id, **values)
                    elif not Customer.objects.filter(pk=customer.pk, tenant_id=tenant_id).update(
                        **values, updated_at=now
                    ):
                        raise IntegrityError(f"customer {customer.pk} was deleted meanwhile")
            except IntegrityError as exc:
                written.errors.append(
                    values_error_detail(
                        values, f"conflicts with another customer of this tenant written meanwhile: {exc}"
                    )
                )
                continue
            (written.creates if customer.pk is None else written.updates).append(customer)
        record_progress(
            run=batch.run,
            result=batch.result,
            plan=written,
            pages=batch.pages,
            deferred=batch.deferred_before + written.deferred,
        )
    return written


def record_progress(
    *, run: SyncRun, result: SyncResult, plan: BatchPlan, pages: int, deferred: list[dict[str, Any]]
) -> None:
    """Heartbeat, counters, pages done and checkpoint of the run, inside the batch's
    transaction: the checkpoint (`run.checkpoint`, set by the sync for this batch, with
    the records still `deferred`) is stored exactly when the batch is."""
    projected = SyncResult(
        business_id=result.business_id,
        business_name=result.business_name,
        error_details=list(result.error_details) if plan.errors else result.error_details,
    )
    apply_plan_to_result(plan, projected, base=result)
    counters = run_counters(projected)
    if len(projected.error_details) == len(result.error_details):
        # Unchanged: not worth sending up to MAX_STORED_ERROR_DETAILS again every batch.
        del counters["error_details"]
    checkpoint = {**run.checkpoint, "deferred": deferred} if run.checkpoint is not None else None
    values = {
        "heartbeat_at": timezone.now(),
        **counters,
        "pages_done": run.pages_done + pages,
        "checkpoint": checkpoint,
    }
    if not run_sql.record_run_progress(run_id=run.pk, values=values):
        raise RunTakenOver()


def apply_plan_to_result(plan: BatchPlan, target: SyncResult, base: SyncResult | None = None) -> None:
    base = base or target
    target.created = base.created + len(plan.creates)
    target.updated = base.updated + len(plan.updates)
    target.skipped = base.skipped + plan.skipped
    target.errors = base.errors
    for detail in plan.errors:
        target.add_error(detail)
