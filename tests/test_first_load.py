"""A first load writes its batches of new customers without looking for them first; the
tenant's unique indexes vouch for it, and a batch they refuse is written as any other,
with nothing of the refused insert kept."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from sabito_sync.engine import batch_sql as page_sql
from sabito_sync.models import Customer, SyncRun

from .conftest import full_sync, mapping_fed_in_small_batches
from .factories import CustomerFactory, sabito_record

pytestmark = pytest.mark.django_db

FEED = 250  # five batches of 50


@pytest.fixture
def mapping(fake_sabito, settings):
    return mapping_fed_in_small_batches(fake_sabito, settings, business_id="biz-new", records=FEED)


@pytest.fixture
def candidate_lookups(monkeypatch) -> list[int]:
    """How many keys each candidates query looks up, from now on."""
    lookups = []
    real = page_sql.find_candidates

    def find_candidates(**kwargs):
        lookups.append(len(kwargs["keys"]))
        return real(**kwargs)

    monkeypatch.setattr(page_sql, "find_candidates", find_candidates)
    return lookups


def test_a_first_load_into_an_empty_tenant_looks_nothing_up(mapping, candidate_lookups):
    result = full_sync(mapping)

    assert (result.created, result.updated, result.skipped, result.errors) == (FEED, 0, 0, 0)
    assert candidate_lookups == []
    assert Customer.objects.filter(tenant=mapping.tenant, sabito_business_id="biz-new").count() == FEED


def test_a_customer_the_tenant_had_is_matched_by_email_not_duplicated(mapping, candidate_lookups):
    # In the third batch: the first two were written without looking.
    kept = CustomerFactory(tenant=mapping.tenant, email="PERSON120@example.com", name="Entered by hand")

    result = full_sync(mapping)

    assert (result.created, result.updated, result.errors) == (FEED - 1, 1, 0)
    kept.refresh_from_db()
    assert (kept.sabito_customer_id, kept.name) == ("cust-120", "Person 120")
    assert Customer.objects.filter(tenant=mapping.tenant).count() == FEED
    # The refused batch and every batch after it looked their customers up.
    assert candidate_lookups == [50, 50, 50]
    run = SyncRun.objects.get(pk=result.run_id)
    assert (run.created, run.updated, run.pages_done) == (FEED - 1, 1, FEED // 10)


def test_a_customer_linked_by_another_mapping_of_the_tenant_refuses_the_insert(mapping, candidate_lookups):
    # Linked to the same Sabito id through another business's mapping of this tenant.
    other = CustomerFactory(tenant=mapping.tenant, email="someone@example.com", sabito_customer_id="cust-3")

    result = full_sync(mapping)

    other.refresh_from_db()
    assert other.email == "person3@example.com"  # the record's values, on the customer it found by id
    assert (result.created, result.updated) == (FEED - 1, 1)
    assert Customer.objects.filter(tenant=mapping.tenant).count() == FEED
    assert len(candidate_lookups) == FEED // 50


def test_records_of_a_first_load_sharing_an_address_are_matched_as_always(mapping, fake_sabito):
    fake_sabito.records["biz-new"][7] = sabito_record(7, email="person6@example.com")

    result = full_sync(mapping)

    assert (result.created, result.errors) == (FEED - 1, 1)
    assert "already belongs to the customer linked to Sabito id cust-6" in result.error_details[0]["reason"]
    assert Customer.objects.get(email="person6@example.com").sabito_customer_id == "cust-6"


def test_a_refused_insert_keeps_nothing_of_its_batch(mapping, candidate_lookups):
    # The one match is the batch's last record: every other record of the batch would
    # have been inserted before the refusal.
    kept = CustomerFactory(tenant=mapping.tenant, email="person49@example.com")

    with CaptureQueriesContext(connection) as queries:
        result = full_sync(mapping)

    assert (result.created, result.updated) == (FEED - 1, 1)
    assert candidate_lookups == [50] * (FEED // 50)
    assert Customer.objects.filter(tenant=mapping.tenant).count() == FEED
    assert Customer.objects.filter(tenant=mapping.tenant, sabito_customer_id="cust-49").get().pk == kept.pk
    # Its progress too: counted once, by the batch written after the refusal.
    run = SyncRun.objects.get(pk=result.run_id)
    assert (run.created, run.updated, run.pages_done) == (FEED - 1, 1, FEED // 10)
    assert any("ROLLBACK" in query["sql"].upper() for query in queries.captured_queries)


def test_a_batch_refused_after_its_progress_counts_its_pages_once(mapping, candidate_lookups, monkeypatch):
    # As a foreign key checked at commit refuses it: after the batch recorded its progress.
    from django.db import IntegrityError

    from sabito_sync.engine import batch as page_writer

    real = page_writer.record_progress
    refused = []

    def record_progress(**kwargs):
        real(**kwargs)
        if not refused:
            refused.append(kwargs["pages"])
            raise IntegrityError("insert or update on table violates foreign key constraint")

    monkeypatch.setattr(page_writer, "record_progress", record_progress)

    result = full_sync(mapping)

    assert refused == [5] and candidate_lookups == [50]  # the refused batch looked up; the rest were all new
    run = SyncRun.objects.get(pk=result.run_id)
    assert (run.created, run.pages_done) == (FEED, FEED // 10)
    assert Customer.objects.filter(tenant=mapping.tenant).count() == FEED
