"""A re-sync finds the records whose customer was written from the very same record by
their fingerprint, and skips them unread; anything else that changes a synced field
clears the fingerprint, so a skipped record never leaves a customer wrong."""

import hashlib
import json
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from sabito_sync.engine import batch_sql as page_sql
from sabito_sync.engine import records
from sabito_sync.engine.batch import write_batch
from sabito_sync.engine.client import SabitoClient
from sabito_sync.engine.records import SabitoRecord, fingerprint_key
from sabito_sync.models import Customer, SyncRun
from sabito_sync.runs.result import SyncResult

from .conftest import SABITO_TEST_URL, full_sync, mapping_fed_in_small_batches, plans_of_statements
from .factories import CustomerFactory, SabitoMappingFactory, sabito_record

pytestmark = pytest.mark.django_db

FEED = 300  # with batches of 50: the re-sync is looking fingerprints up from its second batch on


@pytest.fixture
def mapping(fake_sabito, settings):
    return mapping_fed_in_small_batches(fake_sabito, settings, business_id="biz-f", records=FEED)


def counting_validation(monkeypatch) -> list:
    """Every record validated from now on, as the client typed it."""
    validated = []
    real = records.usual_typed_values

    def usual_typed_values(record, **kwargs):
        validated.append(record.id)
        return real(record, **kwargs)

    monkeypatch.setattr(records, "usual_typed_values", usual_typed_values)
    return validated


def test_every_customer_a_sync_writes_carries_its_records_fingerprint(mapping):
    full_sync(mapping)

    fingerprints = list(Customer.objects.filter(tenant=mapping.tenant).values_list("sabito_fingerprint", flat=True))
    assert len(fingerprints) == FEED and None not in fingerprints
    assert len(set(fingerprints)) == FEED


def test_a_resync_skips_stored_records_without_checking_them_again(mapping, monkeypatch):
    full_sync(mapping)
    validated = counting_validation(monkeypatch)

    result = full_sync(mapping)

    assert (result.processed, result.skipped, result.created, result.updated) == (FEED, FEED, 0, 0)
    assert validated == []  # the mapping synced before: its records go unread from the first page on


def test_a_first_sync_checks_its_records_as_they_are_fetched(mapping, monkeypatch):
    validated = counting_validation(monkeypatch)

    result = full_sync(mapping)

    assert result.created == FEED
    assert sorted(validated) == sorted(f"cust-{n}" for n in range(FEED))


def test_a_resync_that_finds_its_records_changed_goes_back_to_checking_them_ahead(mapping, fake_sabito, monkeypatch):
    full_sync(mapping)
    fake_sabito.records["biz-f"] = [sabito_record(n, city="Moved") for n in range(FEED)]
    validated = counting_validation(monkeypatch)

    result = full_sync(mapping)

    assert (result.updated, result.skipped) == (FEED, 0)
    assert sorted(validated) == sorted(f"cust-{n}" for n in range(FEED))  # each once, wherever


def test_a_changed_record_in_a_resync_is_checked_and_written(mapping, fake_sabito, monkeypatch):
    full_sync(mapping)
    fake_sabito.records["biz-f"][250] = sabito_record(250, city="Moved")
    fake_sabito.records["biz-f"][260] = sabito_record(260, email="not an address")
    validated = counting_validation(monkeypatch)

    result = full_sync(mapping)

    assert (result.skipped, result.updated, result.errors) == (FEED - 2, 1, 1)
    assert "cust-250" in validated and "cust-260" in validated
    assert Customer.objects.get(sabito_customer_id="cust-250").city == "Moved"
    assert result.error_details[0]["sabitoCustomerId"] == "cust-260"


def test_a_customer_edited_outside_the_sync_is_given_its_records_values_again(mapping):
    full_sync(mapping)
    customer = Customer.objects.get(sabito_customer_id="cust-280")
    customer.name = "Edited in the admin"
    customer.save()

    customer.refresh_from_db()
    assert customer.sabito_fingerprint is None  # the database's trigger cleared it
    result = full_sync(mapping)

    assert (result.updated, result.skipped) == (1, FEED - 1)
    customer.refresh_from_db()
    assert customer.name == "Person 280" and customer.sabito_fingerprint is not None


def test_a_bulk_update_outside_the_sync_clears_the_fingerprints_it_touches(mapping):
    full_sync(mapping)

    Customer.objects.filter(sabito_customer_id__in=["cust-1", "cust-2"]).update(city="Elsewhere")
    Customer.objects.filter(sabito_customer_id="cust-3").update(phone="+15550000003")  # the same value

    fingerprints = dict(Customer.objects.values_list("sabito_customer_id", "sabito_fingerprint"))
    assert fingerprints["cust-1"] is None and fingerprints["cust-2"] is None
    assert fingerprints["cust-3"] is not None and fingerprints["cust-4"] is not None


def test_a_customer_marked_missing_is_unmarked_when_its_unchanged_record_returns(mapping, fake_sabito):
    full_sync(mapping)
    gone = fake_sabito.records["biz-f"].pop(290)
    assert full_sync(mapping).marked_missing == 1
    assert Customer.objects.get(sabito_customer_id="cust-290").sabito_fingerprint is None

    fake_sabito.records["biz-f"].insert(290, gone)
    result = full_sync(mapping)

    assert result.updated == 1
    assert Customer.objects.get(sabito_customer_id="cust-290").sabito_missing_since is None


def test_customers_stored_without_a_fingerprint_are_given_one_and_still_count_as_unchanged(mapping):
    full_sync(mapping)
    customers = Customer.objects.filter(tenant=mapping.tenant)
    # As stored before fingerprints were, or as Sabito sent the records before it
    # changed how it writes their JSON.
    customers.update(sabito_fingerprint=None)
    long_ago = timezone.now() - timedelta(days=30)
    customers.update(updated_at=long_ago)

    result = full_sync(mapping)

    assert (result.skipped, result.updated) == (FEED, 0)
    assert not customers.filter(sabito_fingerprint=None).exists()
    assert not customers.exclude(updated_at=long_ago).exists()  # nothing changed for the people reading it
    assert full_sync(mapping).skipped == FEED


def test_records_sent_as_other_json_are_compared_by_their_values(mapping, fake_sabito):
    full_sync(mapping)
    before = dict(Customer.objects.values_list("sabito_customer_id", "sabito_fingerprint"))
    # Sabito adds a key the sync does not read: every record's JSON is new, no value is.
    fake_sabito.records["biz-f"] = [sabito_record(n, loyaltyTier="gold") for n in range(FEED)]

    result = full_sync(mapping)

    assert (result.skipped, result.updated) == (FEED, 0)
    after = dict(Customer.objects.values_list("sabito_customer_id", "sabito_fingerprint"))
    assert all(after[sabito_id] != fingerprint for sabito_id, fingerprint in before.items())


def test_the_same_record_of_another_business_does_not_count_as_stored(fake_sabito, settings):
    first = SabitoMappingFactory(sabito_business_id="biz-one")
    SabitoMappingFactory(sabito_business_id="biz-two", tenant=first.tenant)
    fake_sabito.records["biz-one"] = [sabito_record(1)]
    fake_sabito.records["biz-two"] = [sabito_record(1)]
    full_sync(first)
    stored = Customer.objects.get(sabito_customer_id="cust-1")

    page = SabitoClient(base_url=SABITO_TEST_URL, api_key="k").fetch_customer_page(
        business_id="biz-two",
        updated_after=None,
        offset=0,
        limit=10,
        record_type=SabitoRecord,
        fingerprint_key=fingerprint_key("biz-two"),
    )

    assert page.fingerprints[0] != stored.sabito_fingerprint
    assert page_sql.find_fingerprinted(tenant_id=first.tenant_id, fingerprints=[page.fingerprints[0]]) == []
    assert page_sql.find_fingerprinted(tenant_id=first.tenant_id, fingerprints=[stored.sabito_fingerprint]) == [0]


def test_a_fingerprint_is_only_found_in_its_own_tenant(mapping):
    full_sync(mapping)
    one, two = Customer.objects.filter(sabito_customer_id__in=["cust-1", "cust-2"]).order_by("sabito_customer_id")
    other_tenant = SabitoMappingFactory(sabito_business_id="biz-other").tenant

    fingerprints = [None, one.sabito_fingerprint, "0" * 32, two.sabito_fingerprint]

    assert sorted(page_sql.find_fingerprinted(tenant_id=mapping.tenant_id, fingerprints=fingerprints)) == [1, 3]
    assert page_sql.find_fingerprinted(tenant_id=other_tenant.pk, fingerprints=fingerprints) == []
    assert page_sql.find_fingerprinted(tenant_id=mapping.tenant_id, fingerprints=[]) == []


def test_a_fingerprint_is_not_given_to_a_customer_edited_since_the_lookup(mapping):
    full_sync(mapping)
    customer = Customer.objects.get(sabito_customer_id="cust-5")
    values = records.written_values(
        {**records.customer_values(sabito_record(5), business_id="biz-f"), "sabito_fingerprint": "f" * 32}
    )
    Customer.objects.filter(pk=customer.pk).update(name="Edited meanwhile")

    updated = page_sql.write_customers(
        tenant_id=mapping.tenant_id,
        creates=[],
        updates=[(customer.pk, *values, False)],
        fields=records.WRITTEN_FIELDS,
        now=timezone.now(),
    )

    customer.refresh_from_db()
    assert updated == 0
    assert (customer.name, customer.sabito_fingerprint) == ("Edited meanwhile", None)


def test_known_records_of_a_batch_are_counted_once_and_never_validated(mapping, fake_sabito, monkeypatch):
    full_sync(mapping)
    run = SyncRun.objects.create(
        mapping=mapping, trigger="cli", status="running", started_at=timezone.now(), heartbeat_at=timezone.now()
    )
    fake_sabito.records["biz-f"] = [sabito_record(1), sabito_record(2), sabito_record(1), sabito_record(3, city="New")]
    page = SabitoClient(base_url=SABITO_TEST_URL, api_key="k").fetch_customer_page(
        business_id="biz-f",
        updated_after=None,
        offset=0,
        limit=10,
        record_type=SabitoRecord,
        fingerprint_key=fingerprint_key("biz-f"),
    )
    validated = counting_validation(monkeypatch)
    result = SyncResult(business_id="biz-f", business_name=mapping.business_name, skipped=1)  # a re-sync so far

    write_batch(
        run=run,
        mapping=mapping,
        validated=page.records,
        fingerprints=page.fingerprints,
        pages=1,
        seen_ids=set(),
        result=result,
    )

    assert validated == ["cust-3"]
    assert (result.skipped, result.updated) == (1 + 2, 1)
    assert Customer.objects.get(sabito_customer_id="cust-3").city == "New"


def test_the_trigger_that_clears_fingerprints_is_in_place():
    if connection.vendor == "postgresql":
        sql = "SELECT count(*) FROM pg_trigger WHERE tgname = %s"
    else:
        sql = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, ["sabito_sync_customer_fingerprint_outdated"])
        assert cursor.fetchone()[0] == 1


def test_a_customer_created_by_a_person_has_no_fingerprint():
    assert CustomerFactory().sabito_fingerprint is None


def test_each_page_carries_the_fingerprints_of_its_own_records_as_sabito_sent_them(fake_sabito, mapping):
    sent = {record["id"]: record for record in fake_sabito.records["biz-f"]}
    key = fingerprint_key("biz-f")
    client = SabitoClient(base_url=SABITO_TEST_URL, api_key="k", page_size=10, overlap_records=3)

    pages = list(client.iter_customer_pages(business_id="biz-f", record_type=SabitoRecord, fingerprint_key=key))

    # Every window after the first re-reads the last records already yielded; the page
    # leaves them out, and their fingerprints with them.
    assert sum(len(page.records) for page in pages) == FEED
    for page in pages:
        expected = [
            hashlib.blake2b(json.dumps(sent[record.id]).encode(), digest_size=16, key=key).hexdigest()
            for record in page.records
        ]
        assert page.fingerprints == expected


def test_a_page_with_an_unusual_record_has_no_fingerprints_and_still_syncs(fake_sabito, mapping):
    fake_sabito.records["biz-f"][7] = {**sabito_record(7), "id": 7}  # a number: not a usual record
    client = SabitoClient(base_url=SABITO_TEST_URL, api_key="k", page_size=10)
    first = next(client.iter_customer_pages(business_id="biz-f", record_type=SabitoRecord, fingerprint_key=b"k"))
    assert first.fingerprints is None

    full_sync(mapping)
    result = full_sync(mapping)

    assert (result.skipped, result.errors, result.updated) == (FEED - 1, 1, 0)
    on_that_page = Customer.objects.filter(sabito_customer_id__in=[f"cust-{n}" for n in range(10)])
    assert set(on_that_page.values_list("sabito_fingerprint", flat=True)) == {None}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner and statistics")
def test_statistics_taken_before_a_large_first_load_still_probe_the_fingerprint_index(mapping):
    # Statistics that know nothing of the tenant, as after its first load: PostgreSQL
    # then believes it has next to no customers, and would read them all by its index.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sabito_sync_customer")
    full_sync(mapping)
    fingerprints = list(Customer.objects.values_list("sabito_fingerprint", flat=True))

    with plans_of_statements("SELECT k.position") as plans:
        found = page_sql.find_fingerprinted(tenant_id=mapping.tenant_id, fingerprints=fingerprints)

    assert len(found) == FEED
    [plan] = plans
    assert "sabito_sync_customer_fingerprint" in plan and "Seq Scan on sabito_sync_customer" not in plan, plan


def test_a_batch_redone_record_by_record_still_gives_unchanged_customers_their_fingerprint(mapping, monkeypatch):
    full_sync(mapping)
    customers = Customer.objects.filter(tenant=mapping.tenant)
    customers.update(sabito_fingerprint=None)
    # The first batch's lookup sees none of them (as if they were written just after it
    # looked): its insert fails on the unique Sabito ids and the batch is redone record by record.
    real, lookups = page_sql.find_candidates, []

    def find_candidates(**kwargs):
        lookups.append(kwargs)
        return [] if len(lookups) == 1 else real(**kwargs)

    monkeypatch.setattr(page_sql, "find_candidates", find_candidates)

    result = full_sync(mapping)

    assert (result.skipped, result.created, result.updated, result.errors) == (FEED, 0, 0, 0)
    assert len(lookups) == FEED // 50 + 1
    assert not customers.filter(sabito_fingerprint=None).exists()
