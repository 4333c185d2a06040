"""Writing a page costs the same SQL statements whatever the page holds: never one per record."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from sabito_sync.models import Customer, SyncRun
from sabito_sync.page_writer import write_page
from sabito_sync.records import validate_records
from sabito_sync.runs import SyncResult

from .factories import CustomerFactory, SabitoMappingFactory, sabito_record

pytestmark = pytest.mark.django_db

# Find the candidates, write the customers (one statement with a data-modifying CTE
# on PostgreSQL, an INSERT and an UPDATE on SQLite), record the run's progress; plus
# the SAVEPOINT and RELEASE of the page's transaction inside the test's own.
STATEMENTS_PER_PAGE = 3 + 2 if connection.vendor == "postgresql" else 4 + 2
PAGE = 100


@pytest.fixture
def page_writer():
    mapping = SabitoMappingFactory(sabito_business_id="biz-q")
    now = timezone.now()
    run = SyncRun.objects.create(mapping=mapping, trigger="cli", status="running", started_at=now, heartbeat_at=now)

    def write(records):
        """One page as sync_mapping writes it; returns that page's counters."""
        result = SyncResult(business_id="biz-q", business_name=mapping.business_name)
        validated = validate_records(records, business_id="biz-q")
        write.deferred = []
        write_page(run=run, mapping=mapping, validated=validated, seen_ids=set(), result=result, deferred=write.deferred)
        return result

    write.mapping = mapping
    return write


def existing(page_writer, numbers):
    page_writer([sabito_record(n) for n in numbers])


def test_a_page_of_new_records(page_writer, django_assert_num_queries):
    with django_assert_num_queries(STATEMENTS_PER_PAGE):
        result = page_writer([sabito_record(n) for n in range(PAGE)])

    assert result.created == PAGE


def test_a_page_of_unchanged_records(page_writer, django_assert_num_queries):
    existing(page_writer, range(PAGE))

    with django_assert_num_queries(STATEMENTS_PER_PAGE):
        result = page_writer([sabito_record(n) for n in range(PAGE)])

    assert result.skipped == PAGE


def test_a_page_of_changed_records(page_writer, django_assert_num_queries):
    existing(page_writer, range(PAGE))

    with django_assert_num_queries(STATEMENTS_PER_PAGE):
        result = page_writer([sabito_record(n, name=f"Renamed {n}") for n in range(PAGE)])

    assert result.updated == PAGE
    assert Customer.objects.filter(name__startswith="Renamed").count() == PAGE


def test_a_mixed_page_with_errors_and_email_matches(page_writer, django_assert_num_queries):
    existing(page_writer, range(40))
    for n in range(200, 210):  # customers a person created, matched by email and linked
        CustomerFactory(tenant=page_writer.mapping.tenant, email=f"person{n}@example.com")
    records = (
        [sabito_record(n) for n in range(20)]  # unchanged
        + [sabito_record(n, phone="+44 20 7946 0000") for n in range(20, 40)]  # changed
        + [sabito_record(n) for n in range(100, 155)]  # new
        + [sabito_record(n) for n in range(200, 210)]  # matched by email
        + [{"email": "no-id@example.com"}, sabito_record(999, email="PERSON100@example.com")]  # invalid, held
    )

    with django_assert_num_queries(STATEMENTS_PER_PAGE):
        result = page_writer(records)

    assert (result.skipped, result.updated, result.created, result.errors) == (20, 20 + 10, 55, 1)
    # The address is held by the customer of another Sabito record: tried again after the last page.
    assert [values["sabito_customer_id"] for values in page_writer.deferred] == ["cust-999"]


def test_a_page_where_customers_swap_addresses_costs_one_statement_more(page_writer, django_assert_num_queries):
    page_writer([sabito_record(1), sabito_record(2)])

    with django_assert_num_queries(STATEMENTS_PER_PAGE + 1):  # the old addresses blanked first
        result = page_writer([sabito_record(1, email="person2@example.com"), sabito_record(2, email="person1@example.com")])

    assert (result.updated, result.errors) == (2, 0)


def test_the_statements_do_not_grow_with_the_page(page_writer):
    with CaptureQueriesContext(connection) as small:
        page_writer([sabito_record(n) for n in range(10)])
    with CaptureQueriesContext(connection) as large:
        page_writer([sabito_record(n) for n in range(10, 1010)])

    assert len(small) == len(large) == STATEMENTS_PER_PAGE


def test_a_page_that_only_holds_invalid_records(page_writer, django_assert_num_queries):
    with django_assert_num_queries(STATEMENTS_PER_PAGE):
        result = page_writer([{"id": None}, "not a record"])

    assert result.errors == 2


# --- A mapping with nothing new ---------------------------------------------------------------

# Most mappings of a beat tick find nothing new: the run's start and end are then all the
# database work. PostgreSQL: one INSERT that also reads the latest run, one UPDATE of the
# run that also writes the outcome onto the mapping. SQLite takes the ORM's way: the
# latest run, the insert, the run's end, the mapping read and saved, with the SAVEPOINT
# and RELEASE of the two transactions inside the test's own.
NOTHING_NEW_STATEMENTS = 2 if connection.vendor == "postgresql" else 9


@pytest.fixture
def synced_mapping(fake_sabito):
    from sabito_sync.sync import sync_mapping

    mapping = SabitoMappingFactory(sabito_business_id="biz-idle")
    fake_sabito.records["biz-idle"] = [sabito_record(1)]
    assert sync_mapping(mapping=mapping, full_sync=True).success
    fake_sabito.records["biz-idle"] = []  # nothing updated since
    return mapping


def test_an_incremental_sync_that_finds_nothing_costs_two_statements(synced_mapping, django_assert_num_queries):
    from sabito_sync.sync import sync_mapping

    watermark = synced_mapping.last_synced_at

    with django_assert_num_queries(NOTHING_NEW_STATEMENTS):
        result = sync_mapping(mapping=synced_mapping)

    assert result.success and result.processed == 0
    run = SyncRun.objects.get(pk=result.run_id)
    assert (run.status, run.full_sync, run.updated_after is not None) == ("succeeded", False, True)
    synced_mapping.refresh_from_db()
    assert synced_mapping.metadata["lastSyncResult"]["customersProcessed"] == 0
    assert synced_mapping.last_synced_at > watermark


def test_as_a_task_a_mapping_that_finds_nothing_costs_at_most_three_statements(synced_mapping, django_assert_max_num_queries):
    from sabito_sync.tasks import sync_mapping_task

    # The task looks the mapping up first (a chunk of the fan-out looks up all of its
    # mappings in one statement).
    with django_assert_max_num_queries(3 if connection.vendor == "postgresql" else NOTHING_NEW_STATEMENTS + 1):
        data = sync_mapping_task.apply(args=[str(synced_mapping.pk), False, "beat"]).get()

    assert data["success"] and data["customersProcessed"] == 0
