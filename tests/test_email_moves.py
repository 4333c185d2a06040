"""Sabito is the source of truth for emails too: customers swap addresses and take
addresses others gave up, on one page or across pages, and the tenant converges in
one sync with exact counters. Only an address its holder's Sabito record still has
is a conflict."""

import pytest

from sabito_sync.engine.sync import sync_mapping
from sabito_sync.models import Customer, SyncRun

from .factories import CustomerFactory, SabitoMappingFactory, sabito_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def mapping(db):
    return SabitoMappingFactory(sabito_business_id="biz-1")


def feed(fake_sabito, *records):
    fake_sabito.records["biz-1"] = list(records)


def emails(mapping) -> dict[str, str]:
    return dict(Customer.objects.filter(tenant=mapping.tenant).values_list("sabito_customer_id", "email"))


def counters(result) -> tuple:
    return (result.created, result.updated, result.skipped, result.errors)


def synced_once(fake_sabito, mapping, *records):
    feed(fake_sabito, *records)
    assert sync_mapping(mapping=mapping, full_sync=True).success


def test_two_customers_swapping_addresses_on_one_page_both_move(fake_sabito, mapping):
    synced_once(fake_sabito, mapping, sabito_record(1, email="a@example.com"), sabito_record(2, email="b@example.com"))
    feed(fake_sabito, sabito_record(1, email="b@example.com"), sabito_record(2, email="a@example.com"))

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success and counters(result) == (0, 2, 0, 0)
    assert emails(mapping) == {"cust-1": "b@example.com", "cust-2": "a@example.com"}


@pytest.mark.parametrize("order", ["a-first", "b-first"])
def test_two_customers_swapping_addresses_across_pages_both_move(fake_sabito, mapping, settings, order):
    settings.SABITO_PAGE_SIZE = "2"
    filler = [sabito_record(n) for n in range(10, 14)]  # puts the two records on different pages
    a, b = sabito_record(1, email="a@example.com"), sabito_record(2, email="b@example.com")
    synced_once(fake_sabito, mapping, a, *filler, b)
    a_moved, b_moved = sabito_record(1, email="b@example.com"), sabito_record(2, email="a@example.com")
    first, second = (a_moved, b_moved) if order == "a-first" else (b_moved, a_moved)
    feed(fake_sabito, first, *filler, second)

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success and counters(result) == (0, 2, 4, 0)  # each counted once, as what it became
    assert emails(mapping)["cust-1"] == "b@example.com" and emails(mapping)["cust-2"] == "a@example.com"
    run = SyncRun.objects.get(pk=result.run_id)
    assert run.customers_processed == 6 and run.error_details == []


def test_a_customer_takes_the_address_another_gave_up_later_in_the_feed(fake_sabito, mapping, settings):
    settings.SABITO_PAGE_SIZE = "2"
    synced_once(fake_sabito, mapping, sabito_record(1, email="old@example.com"))
    filler = [sabito_record(n) for n in range(10, 14)]
    feed(
        fake_sabito,
        sabito_record(5, email="old@example.com"),  # X, new, takes the address ...
        *filler,
        sabito_record(1, email="new@example.com"),  # ... A gives up two pages later
    )

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success and counters(result) == (5, 1, 0, 0)
    assert emails(mapping)["cust-5"] == "old@example.com" and emails(mapping)["cust-1"] == "new@example.com"


def test_an_address_its_holders_sabito_record_still_has_is_a_conflict(fake_sabito, mapping):
    synced_once(fake_sabito, mapping, sabito_record(1, email="mine@example.com"))
    # An incremental feed that does not bring cust-1: its Sabito record is unchanged.
    feed(fake_sabito, sabito_record(2, email="mine@example.com"))

    result = sync_mapping(mapping=mapping)

    assert result.success and counters(result) == (0, 0, 0, 1)
    [detail] = result.error_details
    assert detail["sabitoCustomerId"] == "cust-2"
    assert "belongs to the customer linked to Sabito id cust-1, whose Sabito record still has it" in detail["reason"]
    assert emails(mapping) == {"cust-1": "mine@example.com"}


def test_two_records_claiming_one_address_leave_it_with_the_holder(fake_sabito, mapping):
    synced_once(fake_sabito, mapping, sabito_record(1, email="mine@example.com"))
    feed(
        fake_sabito,
        sabito_record(2, email="mine@example.com"),
        sabito_record(1, email="mine@example.com", name="Still me"),
    )

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert counters(result) == (0, 1, 0, 1)
    assert emails(mapping) == {"cust-1": "mine@example.com"}


def test_a_holder_made_by_hand_is_matched_and_linked(fake_sabito, mapping):
    by_hand = CustomerFactory(tenant=mapping.tenant, email="hand@example.com", sabito_customer_id=None)
    feed(fake_sabito, sabito_record(7, email="hand@example.com"))

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert counters(result) == (0, 1, 0, 0)
    by_hand.refresh_from_db()
    assert by_hand.sabito_customer_id == "cust-7"


def test_a_chain_of_moves_on_one_page_converges(fake_sabito, mapping):
    synced_once(
        fake_sabito,
        mapping,
        sabito_record(1, email="one@example.com"),
        sabito_record(2, email="two@example.com"),
        sabito_record(3, email="three@example.com"),
    )
    # 1 takes 2's address, 2 takes 3's, 3 takes 1's: a cycle of three.
    feed(
        fake_sabito,
        sabito_record(1, email="two@example.com"),
        sabito_record(2, email="three@example.com"),
        sabito_record(3, email="one@example.com"),
    )

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert counters(result) == (0, 3, 0, 0)
    assert emails(mapping) == {"cust-1": "two@example.com", "cust-2": "three@example.com", "cust-3": "one@example.com"}


def test_a_record_waiting_for_an_address_survives_a_failed_run_and_the_resume_applies_it(
    fake_sabito, mapping, settings
):
    settings.SABITO_PAGE_SIZE = "2"
    filler = [sabito_record(n) for n in range(10, 14)]
    synced_once(
        fake_sabito, mapping, sabito_record(1, email="a@example.com"), *filler, sabito_record(2, email="b@example.com")
    )
    feed(fake_sabito, sabito_record(1, email="b@example.com"), *filler, sabito_record(2, email="c@example.com"))
    fake_sabito.down_from_offset = 5  # the page with cust-2 never comes

    failed = sync_mapping(mapping=mapping, full_sync=True)
    assert not failed.success
    assert [
        values["sabito_customer_id"] for values in SyncRun.objects.get(pk=failed.run_id).checkpoint["deferred"]
    ] == ["cust-1"]
    fake_sabito.down_from_offset = None

    resumed = sync_mapping(mapping=mapping, full_sync=True)

    assert resumed.success
    assert emails(mapping)["cust-1"] == "b@example.com" and emails(mapping)["cust-2"] == "c@example.com"
