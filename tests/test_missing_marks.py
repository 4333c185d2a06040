"""After a complete full sync, the mapping's linked customers Sabito no longer returned
are marked missing: exactly those, in one statement however many there are."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from sabito_sync.engine.missing import mark_missing_customers
from sabito_sync.engine.sync import sync_mapping
from sabito_sync.models import Customer

from .conftest import plans_of_statements
from .factories import CustomerFactory, SabitoMappingFactory, TenantFactory, sabito_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def mapping():
    return SabitoMappingFactory(sabito_business_id="biz-m")


def linked(mapping, n: int, **fields) -> Customer:
    return CustomerFactory(
        tenant=mapping.tenant, sabito_customer_id=f"cust-{n}", sabito_business_id=mapping.sabito_business_id, **fields
    )


def missing_ids(tenant) -> set[str]:
    return set(
        Customer.objects.filter(tenant=tenant, sabito_missing_since__isnull=False).values_list(
            "sabito_customer_id", flat=True
        )
    )


def test_only_the_mappings_linked_customers_not_returned_are_marked(mapping):
    for n in range(1, 6):
        linked(mapping, n)
    long_ago = timezone.now() - timedelta(days=30)
    already = linked(mapping, 6, sabito_missing_since=long_ago)
    CustomerFactory(tenant=mapping.tenant, sabito_customer_id="cust-7", sabito_business_id="biz-other")
    CustomerFactory(tenant=mapping.tenant, sabito_customer_id=None, sabito_business_id=mapping.sabito_business_id)
    elsewhere = CustomerFactory(tenant=TenantFactory(), sabito_customer_id="cust-8", sabito_business_id="biz-m")

    marked = mark_missing_customers(mapping=mapping, returned_ids={"cust-1", "cust-2"})

    assert marked == 3
    assert missing_ids(mapping.tenant) == {"cust-3", "cust-4", "cust-5", "cust-6"}
    already.refresh_from_db()
    assert already.sabito_missing_since == long_ago  # not stamped again
    elsewhere.refresh_from_db()
    assert elsewhere.sabito_missing_since is None


def test_thousands_of_linked_customers_cost_a_few_statements(mapping, django_assert_num_queries):
    Customer.objects.bulk_create(
        Customer(
            tenant=mapping.tenant,
            email=f"person{n}@example.com",
            sabito_customer_id=f"cust-{n}",
            sabito_business_id=mapping.sabito_business_id,
        )
        for n in range(5000)
    )
    returned = {f"cust-{n}" for n in range(5000) if n % 500} | {f"cust-{n}" for n in range(9000, 9100)}

    # SQLite: one UPDATE with the ids as JSON. PostgreSQL: the ids copied into a
    # temporary table, nested loops off, the UPDATE, the setting restored, the table
    # dropped (and, inside the test's transaction, the savepoint around them).
    with django_assert_num_queries(8 if connection.vendor == "postgresql" else 1):
        marked = mark_missing_customers(mapping=mapping, returned_ids=returned)

    assert marked == 10
    assert missing_ids(mapping.tenant) == {f"cust-{n}" for n in range(0, 5000, 500)}


def test_nothing_returned_marks_every_linked_customer(mapping):
    for n in range(3):
        linked(mapping, n)

    assert mark_missing_customers(mapping=mapping, returned_ids=set()) == 3


def test_a_full_sync_marks_missing_but_not_a_rejected_record_sabito_still_has(mapping, fake_sabito):
    for n in range(1, 5):
        linked(mapping, n, email=f"person{n}@example.com")
    fake_sabito.records["biz-m"] = [sabito_record(1), sabito_record(2), sabito_record(3, email="not an address")]

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success and result.errors == 1
    assert result.marked_missing == 1
    assert missing_ids(mapping.tenant) == {"cust-4"}


def test_a_customer_back_in_the_feed_is_no_longer_missing_and_not_marked_again(mapping, fake_sabito):
    linked(mapping, 1, email="person1@example.com", sabito_missing_since=timezone.now())
    linked(mapping, 2, email="person2@example.com")
    fake_sabito.records["biz-m"] = [sabito_record(1)]

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.marked_missing == 1
    assert missing_ids(mapping.tenant) == {"cust-2"}


def test_ids_with_characters_copy_would_read_otherwise_are_still_seen(mapping):
    # Backslashes, tabs and line breaks mean something to COPY's text format; ids
    # holding them must arrive as they are, or their customers would be marked missing.
    odd_ids = ["back\\slash", "tab\there", "line\nbreak", "carriage\rreturn", "\\N", "\\."]
    for sabito_id in [*odd_ids, "gone"]:
        CustomerFactory(
            tenant=mapping.tenant, sabito_customer_id=sabito_id, sabito_business_id=mapping.sabito_business_id
        )
    plain = [f"cust-{n}" for n in range(12_000)]  # more than one block of lines

    marked = mark_missing_customers(mapping=mapping, returned_ids=set(odd_ids + plain))

    assert marked == 1
    assert missing_ids(mapping.tenant) == {"gone"}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner and statistics")
def test_statistics_taken_before_a_large_first_load_cannot_make_the_marks_loop(mapping):
    # Statistics that know nothing of the tenant, as after its first load: PostgreSQL
    # then believes it has next to no customers.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sabito_sync_customer")
    Customer.objects.bulk_create(
        Customer(tenant=mapping.tenant, sabito_customer_id=f"cust-{n}", sabito_business_id=mapping.sabito_business_id)
        for n in range(3000)
    )

    with plans_of_statements("UPDATE") as plans:
        marked = mark_missing_customers(mapping=mapping, returned_ids={f"cust-{n}" for n in range(1, 3000)})

    assert marked == 1 and missing_ids(mapping.tenant) == {"cust-0"}
    [plan] = plans
    # Each side read once: no loop that computes the difference again per customer.
    assert "Nested Loop" not in plan, plan
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_nestloop")
        assert cursor.fetchone()[0] == "on"  # the setting did not outlive the call
