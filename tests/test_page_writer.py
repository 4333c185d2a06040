"""How a page reaches the database: fetched ahead while the previous one is written,
and redone record by record when someone else changed the tenant's customers between
the page's lookup and its write."""

import threading
import time
import uuid

import pytest
from django.utils import timezone

from sabito_sync.engine import batch_sql as page_sql
from sabito_sync.engine import records, sync
from sabito_sync.engine.batch import write_batch
from sabito_sync.engine.sync import sync_mapping
from sabito_sync.models import Customer, SyncRun
from sabito_sync.runs.result import SyncResult

from .factories import CustomerFactory, SabitoMappingFactory, sabito_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def mapping():
    return SabitoMappingFactory(sabito_business_id="biz-w")


def serve(fake_sabito, mapping, records):
    fake_sabito.records[mapping.sabito_business_id] = records


def lookup_sees(monkeypatch, rows_for_first_lookup):
    """The page's lookup returns these rows once (what it saw before someone else's
    write landed), then looks for real."""
    real = page_sql.find_candidates
    calls = []

    def find_candidates(**kwargs):
        calls.append(kwargs)
        return rows_for_first_lookup(kwargs) if len(calls) == 1 else real(**kwargs)

    monkeypatch.setattr(page_sql, "find_candidates", find_candidates)
    return calls


def test_a_customer_created_meanwhile_is_matched_not_duplicated(fake_sabito, mapping, monkeypatch):
    serve(fake_sabito, mapping, [sabito_record(1), sabito_record(2)])
    CustomerFactory(tenant=mapping.tenant, email="person1@example.com", name="Added by a person")
    calls = lookup_sees(monkeypatch, lambda kwargs: [])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert len(calls) == 2  # the bulk write failed on the unique email, the page was redone
    assert (result.created, result.updated, result.errors) == (1, 1, 0)
    assert Customer.objects.filter(tenant=mapping.tenant).count() == 2
    assert Customer.objects.get(email="person1@example.com").sabito_customer_id == "cust-1"


def test_a_customer_deleted_meanwhile_is_created_again(fake_sabito, mapping, monkeypatch):
    serve(fake_sabito, mapping, [sabito_record(1, name="New name")])
    gone = CustomerFactory(tenant=mapping.tenant, sabito_customer_id="cust-1", email="person1@example.com")
    seen_before_the_delete = page_sql.find_candidates(
        tenant_id=mapping.tenant_id, keys=[("cust-1", "person1@example.com")], fields=records.SYNCED_FIELDS
    )
    gone.delete()
    lookup_sees(monkeypatch, lambda kwargs: seen_before_the_delete)

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert (result.created, result.updated, result.errors) == (1, 0, 0)
    assert Customer.objects.get(tenant=mapping.tenant).name == "New name"


def test_a_write_never_reaches_another_tenants_customer(fake_sabito, mapping, monkeypatch):
    serve(fake_sabito, mapping, [sabito_record(1, name="New name")])
    elsewhere = CustomerFactory(sabito_customer_id="cust-1", email="person1@example.com", name="Other tenant's")
    # A lookup that (wrongly) hands back the other tenant's row: defence in depth
    # below the tenant-scoped lookup, the write itself is scoped to the tenant.
    wrong_rows = page_sql.find_candidates(
        tenant_id=elsewhere.tenant_id, keys=[("cust-1", "person1@example.com")], fields=records.SYNCED_FIELDS
    )
    lookup_sees(monkeypatch, lambda kwargs: wrong_rows)

    result = sync_mapping(mapping=mapping, full_sync=True)

    elsewhere.refresh_from_db()
    assert elsewhere.name == "Other tenant's"
    assert (result.created, result.updated, result.errors) == (1, 0, 0)
    assert Customer.objects.get(tenant=mapping.tenant).name == "New name"


def test_the_next_page_is_fetched_while_the_current_one_is_written(fake_sabito, mapping, settings, monkeypatch):
    settings.SABITO_PAGE_SIZE = "2"
    serve(fake_sabito, mapping, [sabito_record(n) for n in range(6)])
    real_write_batch = sync.write_batch
    requests_during_first_write = []

    def slow_first_write(**kwargs):
        if not requests_during_first_write:
            deadline = time.monotonic() + 5
            while len(fake_sabito.requests) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            requests_during_first_write.append(len(fake_sabito.requests))
        return real_write_batch(**kwargs)

    monkeypatch.setattr(sync, "write_batch", slow_first_write)

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success and result.created == 6
    assert requests_during_first_write[0] >= 2


def test_no_fetching_thread_outlives_a_failed_sync(fake_sabito, mapping, settings):
    settings.SABITO_PAGE_SIZE = "2"
    serve(fake_sabito, mapping, [sabito_record(n) for n in range(4)])
    fake_sabito.bodies_at_offset[1] = '{"unexpected": true}'

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert not result.success and result.created == 2
    assert not [thread for thread in threading.enumerate() if thread.name == "sabito-prefetch"]


def test_no_fetching_thread_outlives_a_write_that_failed(fake_sabito, mapping, settings, monkeypatch):
    settings.SABITO_PAGE_SIZE = "2"
    serve(fake_sabito, mapping, [sabito_record(n) for n in range(20)])

    def failing_write(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(sync, "write_batch", failing_write)

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert not result.success and "disk on fire" in result.error
    assert not [thread for thread in threading.enumerate() if thread.name == "sabito-prefetch"]


def test_a_conflict_in_a_batch_of_several_pages_redoes_the_batch_record_by_record(
    fake_sabito, mapping, settings, monkeypatch
):
    settings.SABITO_PAGE_SIZE = "2"
    settings.SABITO_WRITE_BATCH_RECORDS = "6"  # batches of three pages
    serve(fake_sabito, mapping, [sabito_record(n) for n in range(10)])
    # A person adds a customer with the address of a record on the second page of the
    # first batch, after that batch's lookup.
    CustomerFactory(tenant=mapping.tenant, email="person3@example.com", name="Added by a person")
    calls = lookup_sees(monkeypatch, lambda kwargs: [])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert len(calls) == 2 + 1  # the first batch twice (in bulk, then record by record), the second once
    assert len(calls[0]["keys"]) == 6 and len(calls[2]["keys"]) == 4
    assert (result.created, result.updated, result.skipped, result.errors) == (9, 1, 0, 0)
    run = SyncRun.objects.get(pk=result.run_id)
    assert (run.created, run.updated, run.customers_processed, run.pages_done) == (9, 1, 10, 5)
    assert Customer.objects.filter(tenant=mapping.tenant).count() == 10
    assert Customer.objects.get(email="person3@example.com").sabito_customer_id == "cust-3"


def test_a_record_repeated_on_two_pages_of_one_batch_is_written_once(mapping):
    now = timezone.now()
    run = SyncRun.objects.create(mapping=mapping, trigger="cli", status="running", started_at=now, heartbeat_at=now)
    result = SyncResult(business_id=mapping.sabito_business_id, business_name=mapping.business_name)
    first_page = [sabito_record(1), sabito_record(2)]
    second_page = [sabito_record(1, name="Moved to the end by an edit"), sabito_record(3)]
    validated = records.validate_records(first_page + second_page, business_id=mapping.sabito_business_id)

    write_batch(run=run, mapping=mapping, validated=validated, pages=2, seen_ids=set(), result=result)

    assert (result.created, result.updated, result.skipped, result.errors) == (3, 0, 0, 0)
    assert Customer.objects.get(sabito_customer_id="cust-1").name == "Person 1"  # once, as first seen
    assert SyncRun.objects.get(pk=run.pk).pages_done == 2


def test_customers_a_sync_creates_get_random_uuids_like_any_other(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(number) for number in range(1, 31)])

    sync_mapping(mapping=mapping, full_sync=True)

    ids = list(Customer.objects.filter(tenant=mapping.tenant).values_list("id", flat=True))
    assert len(ids) == len(set(ids)) == 30
    assert {(pk.version, pk.variant) for pk in ids} == {(4, uuid.RFC_4122)}  # what the model's uuid4 default makes
    assert page_sql.random_uuid_bytes(0) == []


def test_the_lookup_calls_unchanged_only_a_customer_with_exactly_its_records_values(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(n) for n in range(1, 6)])
    sync_mapping(mapping=mapping, full_sync=True)
    # Changes no one sees at a glance, each one a reason to write the customer again.
    Customer.objects.filter(sabito_customer_id="cust-2").update(email="Person2@example.com")
    Customer.objects.filter(sabito_customer_id="cust-3").update(sabito_missing_since=timezone.now())
    Customer.objects.filter(sabito_customer_id="cust-4").update(name="Person 4 ")
    validated = records.validate_records(
        [sabito_record(n) for n in range(1, 6)] + [sabito_record(6)], business_id=mapping.sabito_business_id
    )
    keys = [(values["sabito_customer_id"], values["email"].lower()) for values in validated]
    expected = [records.synced_values(values) for values in validated]
    sabito_id_at = 4 + records.SABITO_ID_POSITION

    rows = page_sql.find_candidates(
        tenant_id=mapping.tenant_id, keys=keys, fields=records.SYNCED_FIELDS, expected=expected
    )
    without_expected = page_sql.find_candidates(tenant_id=mapping.tenant_id, keys=keys, fields=records.SYNCED_FIELDS)

    by_id = {row[sabito_id_at]: row for row in rows if row[1]}
    assert set(by_id) == {"cust-1", "cust-2", "cust-3", "cust-4", "cust-5"}  # cust-6 is new
    assert {sabito_id for sabito_id, row in by_id.items() if row[3]} == {"cust-1", "cust-5"}
    assert (
        by_id["cust-4"][4:] != expected[3] and by_id["cust-4"][4 + records.SYNCED_FIELDS.index("name")] == "Person 4 "
    )
    assert not any(row[3] for row in without_expected)

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert (result.created, result.updated, result.skipped, result.errors) == (0, 3, 2, 0)
    assert Customer.objects.get(sabito_customer_id="cust-2").email == "person2@example.com"
    assert Customer.objects.get(sabito_customer_id="cust-3").sabito_missing_since is None
    assert Customer.objects.get(sabito_customer_id="cust-4").name == "Person 4"
