"""Writing a batch of pages costs the same SQL statements whatever the batch holds: never
one per record, nor one per page."""

import itertools

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sabito_sync.engine.batch import write_batch
from sabito_sync.engine.records import validate_records
from sabito_sync.engine.sync import sync_mapping
from sabito_sync.models import Customer, SyncRun
from sabito_sync.runs.result import SyncResult

from .factories import CustomerFactory, SabitoMappingFactory, sabito_record

pytestmark = pytest.mark.django_db

# Find the records stored already (by fingerprint), find the candidates, insert the new
# customers (a COPY on PostgreSQL), update the changed ones, record the run's progress;
# plus the SAVEPOINT and RELEASE of the batch's transaction inside the test's own.
STATEMENTS_PER_BATCH = 5 + 2
# A first load's batch of new customers is inserted without finding candidates first.
FIRST_LOAD_STATEMENTS_PER_BATCH = STATEMENTS_PER_BATCH - 1
PAGE = 100
BATCH = 20 * PAGE


@pytest.fixture
def batch_writer():
    mapping = SabitoMappingFactory(sabito_business_id="biz-q")
    now = timezone.now()
    run = SyncRun.objects.create(mapping=mapping, trigger="cli", status="running", started_at=now, heartbeat_at=now)

    def write(records, *, first_load=False):
        """One batch as sync_mapping writes it, of a mapping that synced before (or of
        a first load); returns that batch's counters."""
        result = SyncResult(business_id="biz-q", business_name=mapping.business_name)
        validated = validate_records(records, business_id="biz-q")
        write.deferred = []
        write_batch(
            run=run,
            mapping=mapping,
            validated=validated,
            pages=max(1, len(records) // PAGE),
            seen_ids=set(),
            result=result,
            deferred=write.deferred,
            expect_stored=not first_load,
        )
        return result

    write.mapping = mapping
    return write


def existing(batch_writer, numbers):
    batch_writer([sabito_record(n) for n in numbers])


def test_a_batch_of_new_records(batch_writer, django_assert_num_queries):
    with django_assert_num_queries(STATEMENTS_PER_BATCH):
        result = batch_writer([sabito_record(n) for n in range(BATCH)])

    assert result.created == BATCH


def test_a_first_loads_batch_of_new_records_finds_no_candidates(batch_writer, django_assert_num_queries):
    with django_assert_num_queries(FIRST_LOAD_STATEMENTS_PER_BATCH):
        result = batch_writer([sabito_record(n) for n in range(BATCH)], first_load=True)

    assert result.created == BATCH == Customer.objects.count()


def test_a_batch_of_unchanged_records(batch_writer, django_assert_num_queries):
    existing(batch_writer, range(BATCH))

    with django_assert_num_queries(STATEMENTS_PER_BATCH):
        result = batch_writer([sabito_record(n) for n in range(BATCH)])

    assert result.skipped == BATCH


def test_a_batch_of_changed_records(batch_writer, django_assert_num_queries):
    existing(batch_writer, range(BATCH))

    with django_assert_num_queries(STATEMENTS_PER_BATCH):
        result = batch_writer([sabito_record(n, name=f"Renamed {n}") for n in range(BATCH)])

    assert result.updated == BATCH
    assert Customer.objects.filter(name__startswith="Renamed").count() == BATCH


def test_a_mixed_batch_with_errors_and_email_matches(batch_writer, django_assert_num_queries):
    existing(batch_writer, range(40))
    for n in range(200, 210):  # customers a person created, matched by email and linked
        CustomerFactory(tenant=batch_writer.mapping.tenant, email=f"person{n}@example.com")
    records = (
        [sabito_record(n) for n in range(20)]  # unchanged
        + [sabito_record(n, phone="+44 20 7946 0000") for n in range(20, 40)]  # changed
        + [sabito_record(n) for n in range(100, 155)]  # new
        + [sabito_record(n) for n in range(200, 210)]  # matched by email
        + [{"email": "no-id@example.com"}, sabito_record(999, email="PERSON100@example.com")]  # invalid, held
    )

    with django_assert_num_queries(STATEMENTS_PER_BATCH):
        result = batch_writer(records)

    assert (result.skipped, result.updated, result.created, result.errors) == (20, 20 + 10, 55, 1)
    # The address is held by the customer of another Sabito record: tried again after the last batch.
    assert [values["sabito_customer_id"] for values in batch_writer.deferred] == ["cust-999"]


def test_a_batch_where_customers_swap_addresses_costs_one_statement_more(batch_writer, django_assert_num_queries):
    batch_writer([sabito_record(1), sabito_record(2)])

    with django_assert_num_queries(STATEMENTS_PER_BATCH + 1):  # the old addresses blanked first
        result = batch_writer(
            [sabito_record(1, email="person2@example.com"), sabito_record(2, email="person1@example.com")]
        )

    assert (result.updated, result.errors) == (2, 0)


def test_the_statements_do_not_grow_with_the_batch(batch_writer):
    with CaptureQueriesContext(connection) as small:
        batch_writer([sabito_record(n) for n in range(10)])
    with CaptureQueriesContext(connection) as large:
        batch_writer([sabito_record(n) for n in range(10, 10 + BATCH)])

    assert len(small) == len(large) == STATEMENTS_PER_BATCH


def test_a_batch_that_only_holds_invalid_records(batch_writer, django_assert_num_queries):
    with django_assert_num_queries(STATEMENTS_PER_BATCH):
        result = batch_writer([{"id": None}, "not a record"])

    assert result.errors == 2


def test_a_mixed_batch_of_many_pages_costs_what_a_page_does(batch_writer):
    existing(batch_writer, range(600))
    records = (
        [sabito_record(n) for n in range(300)]  # unchanged
        + [sabito_record(n, city="Elsewhere") for n in range(300, 600)]  # changed
        + [sabito_record(n) for n in range(1000, 1000 + BATCH - 600)]  # new
    )

    with CaptureQueriesContext(connection) as one_page:
        batch_writer([sabito_record(n) for n in range(5000, 5000 + PAGE)])
    with CaptureQueriesContext(connection) as many_pages:
        result = batch_writer(records)

    assert len(one_page) == len(many_pages) == STATEMENTS_PER_BATCH
    assert (result.skipped, result.updated, result.created) == (300, 300, BATCH - 600)


def test_every_batch_of_a_sync_costs_the_same_statements(fake_sabito, settings):
    settings.SABITO_PAGE_SIZE = "10"
    settings.SABITO_WRITE_BATCH_RECORDS = "50"  # 230 records: five batches, the last one short
    mapping = SabitoMappingFactory(sabito_business_id="biz-s")

    def statements_between_batches(records) -> tuple[set[int], int]:
        fake_sabito.records["biz-s"] = records
        marks: list[int] = []
        with CaptureQueriesContext(connection) as queries:
            result = sync_mapping(mapping=mapping, full_sync=True, on_page=lambda _result: marks.append(len(queries)))
        assert result.success
        return {later - earlier for earlier, later in itertools.pairwise(marks)}, len(marks)

    new = statements_between_batches([sabito_record(n) for n in range(230)])
    # Every batch new, changed and unchanged records side by side.
    mixed_feed = [
        sabito_record(1000 + n) if n % 3 == 0 else sabito_record(n, city="Moved") if n % 3 == 1 else sabito_record(n)
        for n in range(230)
    ]
    mixed = statements_between_batches(mixed_feed)
    unchanged = statements_between_batches(mixed_feed)

    assert new == ({FIRST_LOAD_STATEMENTS_PER_BATCH}, 5)
    assert mixed == unchanged == ({STATEMENTS_PER_BATCH}, 5)


# --- A mapping with nothing new ---------------------------------------------------------------

# Most mappings of a beat tick find nothing new: the run's start and end are then all the
# database work. PostgreSQL: one INSERT that also reads the latest run, one UPDATE of the
# run that also writes the outcome onto the mapping. SQLite takes the ORM's way: the
# latest run, the insert, the run's end, the mapping read and saved, with the SAVEPOINT
# and RELEASE of the two transactions inside the test's own.
NOTHING_NEW_STATEMENTS = 2 if connection.vendor == "postgresql" else 9


@pytest.fixture
def synced_mapping(fake_sabito):
    from sabito_sync.engine.sync import sync_mapping

    mapping = SabitoMappingFactory(sabito_business_id="biz-idle")
    fake_sabito.records["biz-idle"] = [sabito_record(1)]
    assert sync_mapping(mapping=mapping, full_sync=True).success
    fake_sabito.records["biz-idle"] = []  # nothing updated since
    return mapping


def test_an_incremental_sync_that_finds_nothing_costs_two_statements(synced_mapping, django_assert_num_queries):
    from sabito_sync.engine.sync import sync_mapping

    watermark = synced_mapping.last_synced_at

    with django_assert_num_queries(NOTHING_NEW_STATEMENTS):
        result = sync_mapping(mapping=synced_mapping)

    assert result.success and result.processed == 0
    run = SyncRun.objects.get(pk=result.run_id)
    assert (run.status, run.full_sync, run.updated_after is not None) == ("succeeded", False, True)
    synced_mapping.refresh_from_db()
    assert synced_mapping.metadata["lastSyncResult"]["customersProcessed"] == 0
    assert synced_mapping.last_synced_at > watermark


def test_as_a_task_a_mapping_that_finds_nothing_costs_at_most_three_statements(
    synced_mapping, django_assert_max_num_queries
):
    from sabito_sync.tasks import sync_mapping_task

    # The task looks the mapping up first (a chunk of the fan-out looks up all of its
    # mappings in one statement).
    with django_assert_max_num_queries(3 if connection.vendor == "postgresql" else NOTHING_NEW_STATEMENTS + 1):
        data = sync_mapping_task.apply(args=[str(synced_mapping.pk), False, "beat"]).get()

    assert data["success"] and data["customersProcessed"] == 0
