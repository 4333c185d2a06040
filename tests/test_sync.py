"""The sync engine's rules, one behaviour per test, with Sabito faked at the HTTP boundary."""

import logging
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from sabito_sync.engine.sync import sync_all_mappings, sync_mapping
from sabito_sync.models import Customer, SyncRun
from sabito_sync.runs.result import SyncAlreadyRunning
from sabito_sync.runs.result import result_data as sync_result_data

from .conftest import SABITO_TEST_KEY
from .factories import CustomerFactory, SabitoMappingFactory, TenantFactory, sabito_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def mapping():
    return SabitoMappingFactory(sabito_business_id="biz-123", business_name="iCreations Global")


def serve(fake_sabito, mapping, records):
    fake_sabito.records[mapping.sabito_business_id] = records


def test_full_sync_creates_customers_with_the_guides_field_mapping(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(1, email="Ada@Example.com", sourceType="referral")])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success and result.created == 1
    customer = Customer.objects.get()
    assert customer.tenant == mapping.tenant
    assert customer.sabito_customer_id == "cust-1"
    assert customer.email == "Ada@Example.com"
    assert (customer.name, customer.phone, customer.address) == ("Person 1", "+15550000001", "1 Main St")
    assert (customer.city, customer.state, customer.country) == ("Springfield", "IL", "USA")
    assert customer.sabito_source_referral_id == "ref-1"
    assert customer.sabito_source_type == "referral"
    assert customer.how_did_you_hear == "Sabito Referral"
    assert customer.sabito_business_id == "biz-123"


@pytest.mark.parametrize("country", [None, "", "   "])
def test_country_defaults_to_usa_when_missing_or_null(fake_sabito, mapping, country):
    serve(fake_sabito, mapping, [sabito_record(1, country=country)])

    sync_mapping(mapping=mapping, full_sync=True)

    assert Customer.objects.get().country == "USA"


def test_country_missing_key_defaults_to_usa(fake_sabito, mapping):
    record = sabito_record(1)
    del record["country"]
    serve(fake_sabito, mapping, [record])

    sync_mapping(mapping=mapping, full_sync=True)

    assert Customer.objects.get().country == "USA"


def test_unknown_fields_in_a_record_are_ignored(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(1, loyaltyTier="gold", updatedAt="2025-01-01T00:00:00Z")])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success and result.created == 1 and result.errors == 0


def test_paging_with_a_capped_page_size_still_syncs_every_record(fake_sabito, mapping, settings):
    settings.SABITO_PAGE_SIZE = "100"
    fake_sabito.page_cap = 30
    serve(fake_sabito, mapping, [sabito_record(n) for n in range(250)])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success and result.created == 250
    assert Customer.objects.count() == 250
    # 30 per window whatever was asked; each window re-reads the previous one's last 10.
    offsets = [int(request["offset"]) for request in fake_sabito.requests]
    assert offsets == list(range(0, 241, 20))


def test_rerun_of_unchanged_data_skips_every_record(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(n) for n in range(5)])
    sync_mapping(mapping=mapping, full_sync=True)

    again = sync_mapping(mapping=mapping, full_sync=True)

    assert (again.created, again.updated, again.skipped) == (0, 0, 5)
    assert Customer.objects.count() == 5


def test_changed_field_updates_the_existing_customer(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(1), sabito_record(2)])
    sync_mapping(mapping=mapping, full_sync=True)
    serve(fake_sabito, mapping, [sabito_record(1, phone="+44 20 7946 0000"), sabito_record(2)])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert (result.created, result.updated, result.skipped) == (0, 1, 1)
    assert Customer.objects.get(sabito_customer_id="cust-1").phone == "+44 20 7946 0000"


def test_counters_add_up_to_customers_processed(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(1), sabito_record(2)])
    sync_mapping(mapping=mapping, full_sync=True)
    serve(
        fake_sabito,
        mapping,
        [sabito_record(1), sabito_record(2, name="Renamed"), sabito_record(3), {"email": "no-id@example.com"}],
    )

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert (result.created, result.updated, result.skipped, result.errors) == (1, 1, 1, 1)
    assert result.processed == 4 == result.created + result.updated + result.skipped + result.errors
    assert sync_result_data(result)["customersProcessed"] == 4


def test_email_match_is_case_insensitive_and_links_the_sabito_id(fake_sabito, mapping):
    existing = CustomerFactory(tenant=mapping.tenant, email="Grace.Hopper@Navy.mil", name="Grace")
    serve(fake_sabito, mapping, [sabito_record(7, email="grace.hopper@navy.MIL", name="Grace Hopper")])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert (result.created, result.updated) == (0, 1)
    existing.refresh_from_db()
    assert existing.sabito_customer_id == "cust-7"
    assert existing.name == "Grace Hopper"
    assert Customer.objects.count() == 1


def test_sabito_id_is_matched_before_email(fake_sabito, mapping):
    linked = CustomerFactory(tenant=mapping.tenant, sabito_customer_id="cust-1", email="old@example.com")
    serve(fake_sabito, mapping, [sabito_record(1, email="new@example.com")])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.updated == 1
    linked.refresh_from_db()
    assert linked.email == "new@example.com"


def test_id_and_email_pointing_at_different_customers_is_an_error_not_a_merge(fake_sabito, mapping):
    by_id = CustomerFactory(tenant=mapping.tenant, sabito_customer_id="cust-1", email="one@example.com")
    by_email = CustomerFactory(tenant=mapping.tenant, email="two@example.com")
    serve(fake_sabito, mapping, [sabito_record(1, email="two@example.com")])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success and result.errors == 1 and result.updated == 0
    assert "belongs to another customer" in result.error_details[0]["reason"]
    by_id.refresh_from_db(), by_email.refresh_from_db()
    assert by_id.email == "one@example.com" and by_email.sabito_customer_id is None


def test_email_already_linked_to_another_sabito_id_is_an_error(fake_sabito, mapping):
    CustomerFactory(tenant=mapping.tenant, sabito_customer_id="cust-1", email="shared@example.com")
    serve(fake_sabito, mapping, [sabito_record(2, email="shared@example.com")])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.errors == 1 and result.created == 0
    assert "already belongs to the customer linked to Sabito id cust-1" in result.error_details[0]["reason"]


def test_two_records_with_one_email_in_a_page_create_one_customer_and_one_error(fake_sabito, mapping):
    serve(
        fake_sabito, mapping, [sabito_record(1, email="twin@example.com"), sabito_record(2, email="TWIN@example.com")]
    )

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert (result.created, result.errors) == (1, 1)
    assert Customer.objects.get().sabito_customer_id == "cust-1"


def test_customers_of_another_tenant_are_never_matched_or_touched(fake_sabito, mapping):
    other_tenant = TenantFactory()
    stranger_by_email = CustomerFactory(tenant=other_tenant, email="person1@example.com", name="Not yours")
    stranger_by_id = CustomerFactory(tenant=other_tenant, sabito_customer_id="cust-2", name="Not yours either")
    serve(fake_sabito, mapping, [sabito_record(1), sabito_record(2)])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.created == 2
    stranger_by_email.refresh_from_db(), stranger_by_id.refresh_from_db()
    assert stranger_by_email.name == "Not yours" and stranger_by_email.sabito_customer_id is None
    assert stranger_by_id.name == "Not yours either"
    assert Customer.objects.filter(tenant=mapping.tenant).count() == 2


def test_duplicate_record_in_one_sync_is_processed_once(fake_sabito, mapping):
    fake_sabito.page_cap = 2
    serve(fake_sabito, mapping, [sabito_record(1), sabito_record(2), sabito_record(1), sabito_record(3)])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert (result.processed, result.created, result.skipped) == (3, 3, 0)
    assert Customer.objects.count() == 3


EMAIL_1 = "person1@example.com"
LONG_EMAIL = "a" * 250 + "@example.com"  # 262 characters: an error entry shows its first 254


@pytest.mark.parametrize(
    ("record", "entry"),
    [
        ({"email": "x@example.com", "name": "No id"}, (None, "x@example.com", "record has no id")),
        (
            sabito_record(1, email="not-an-email"),
            ("cust-1", "not-an-email", "email 'not-an-email' is not a valid address"),
        ),
        (sabito_record(1, phone=5551234), ("cust-1", EMAIL_1, "phone must be a string, got number")),
        (sabito_record(1, phone=55.5), ("cust-1", EMAIL_1, "phone must be a string, got number")),
        (sabito_record(1, city=True), ("cust-1", EMAIL_1, "city must be a string, got boolean")),
        (sabito_record(1, name={"first": "Ada"}), ("cust-1", EMAIL_1, "name must be a string, got object")),
        (sabito_record(1, city=["Paris"]), ("cust-1", EMAIL_1, "city must be a string, got list")),
        (sabito_record(1, name="x" * 256), ("cust-1", EMAIL_1, "name is 256 characters long; the limit is 255")),
        (sabito_record(1, name="Nul\x00byte"), ("cust-1", EMAIL_1, "name contains a NUL character")),
        # JSON may escape half of a surrogate pair alone; no database can store it, and the
        # entry shows it escaped.
        (sabito_record(1, name="Ada \ud800"), ("cust-1", EMAIL_1, "name contains a lone surrogate (\\ud800)")),
        (
            sabito_record(1, email="ada\udfff@example.com"),
            ("cust-1", "ada\\udfff@example.com", "email contains a lone surrogate (\\udfff)"),
        ),
        (sabito_record(1, id="cust-\udc00"), ("cust-\\udc00", EMAIL_1, "id contains a lone surrogate (\\udc00)")),
        # An id that is not a string is shown as null, never as its Python text.
        (sabito_record(1, id={"nested": 1}), (None, EMAIL_1, "id must be a string, got object")),
        (sabito_record(1, id=True), (None, EMAIL_1, "id must be a string, got boolean")),
        (sabito_record(1, id=98765), ("98765", EMAIL_1, "id must be a string, got number")),
        (sabito_record(1, email={"nested": 1}), ("cust-1", None, "email must be a string, got object")),
        (
            sabito_record(1, email=LONG_EMAIL),
            ("cust-1", LONG_EMAIL[:254], "email is 262 characters long; the limit is 254"),
        ),
        ("just a string", (None, None, "record is a string, not an object")),
        (None, (None, None, "record is a null, not an object")),
        (17, (None, None, "record is a number, not an object")),
    ],
)
def test_invalid_record_is_an_error_entry_and_the_rest_of_the_page_is_saved(fake_sabito, mapping, record, entry):
    serve(fake_sabito, mapping, [sabito_record(100), record, sabito_record(101)])

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success
    assert (result.created, result.errors) == (2, 1)
    sabito_id, email, reason = entry
    assert result.error_details == [{"sabitoCustomerId": sabito_id, "email": email, "reason": reason}]
    assert Customer.objects.count() == 2
    run = SyncRun.objects.get(pk=result.run_id)
    assert run.error_details == result.error_details  # stored as reported


def test_strings_are_trimmed(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(1, name="  Ada Lovelace \n", email=" ada@example.com ")])

    sync_mapping(mapping=mapping, full_sync=True)

    customer = Customer.objects.get()
    assert (customer.name, customer.email) == ("Ada Lovelace", "ada@example.com")


def test_first_sync_without_watermark_fetches_everything(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(1)])

    sync_mapping(mapping=mapping)

    assert "updatedAfter" not in fake_sabito.requests[0]


def test_incremental_sync_sends_updated_after_from_last_success(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(1)])
    before = timezone.now()
    sync_mapping(mapping=mapping, full_sync=True)
    mapping.refresh_from_db()
    watermark = parse_datetime(mapping.metadata["lastSyncedAt"])
    fake_sabito.requests.clear()

    sync_mapping(mapping=mapping)

    sent = parse_datetime(fake_sabito.requests[0]["updatedAfter"])
    assert sent == watermark
    # The watermark is the first sync's start minus the 300 s overlap window.
    assert before - timedelta(seconds=301) < watermark < before - timedelta(seconds=299)


def test_full_sync_sends_no_updated_after_even_with_a_watermark(fake_sabito, mapping):
    mapping.metadata = {"lastSyncedAt": "2025-12-14T12:00:00.000Z"}
    mapping.save()
    serve(fake_sabito, mapping, [sabito_record(1)])

    sync_mapping(mapping=mapping, full_sync=True)

    assert all("updatedAfter" not in request for request in fake_sabito.requests)


def test_every_request_carries_the_api_key_and_business_id(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(1)])

    sync_mapping(mapping=mapping, full_sync=True)

    assert {request["X-API-Key"] for request in fake_sabito.requests} == {SABITO_TEST_KEY}
    assert {request["businessId"] for request in fake_sabito.requests} == {"biz-123"}


def test_successful_sync_records_a_run_and_the_guides_summary(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(1), sabito_record(2)])

    result = sync_mapping(mapping=mapping, full_sync=True, trigger=SyncRun.Trigger.API)

    run = SyncRun.objects.get()
    assert (run.status, run.trigger, run.full_sync) == ("succeeded", "api", True)
    assert (run.customers_processed, run.created) == (2, 2)
    assert run.finished_at is not None and run.customers_processed == result.processed
    mapping.refresh_from_db()
    summary = mapping.metadata["lastSyncResult"]
    assert {k: summary[k] for k in ("customersProcessed", "created", "updated", "skipped", "errors")} == {
        "customersProcessed": 2,
        "created": 2,
        "updated": 0,
        "skipped": 0,
        "errors": 0,
    }
    assert summary["syncedAt"].endswith("Z")


def test_result_has_exactly_the_guides_shape(fake_sabito, mapping):
    serve(fake_sabito, mapping, [sabito_record(1)])

    result = sync_result_data(sync_mapping(mapping=mapping, full_sync=True))

    assert result == {
        "success": True,
        "businessId": "biz-123",
        "customersProcessed": 1,
        "created": 1,
        "updated": 0,
        "skipped": 0,
        "errors": 0,
        "errorDetails": [],
    }


def test_garbage_page_fails_the_mapping_and_keeps_the_watermark(fake_sabito, mapping):
    mapping.metadata = {"lastSyncedAt": "2025-12-14T12:00:00.000Z"}
    mapping.save()
    fake_sabito.answer_next(200, "<html>502 Bad Gateway</html>", times=3)  # every try (1 + 2 retries)

    result = sync_mapping(mapping=mapping)

    assert not result.success
    assert "biz-123" in result.error and "offset 0" in result.error
    mapping.refresh_from_db()
    assert mapping.metadata["lastSyncedAt"] == "2025-12-14T12:00:00.000Z"
    assert mapping.metadata["lastSyncResult"]["success"] is False
    run = SyncRun.objects.get()
    assert run.status == "failed" and "biz-123" in run.error_message


def test_failure_on_a_later_page_keeps_earlier_pages_and_the_watermark(fake_sabito, mapping, settings):
    settings.SABITO_PAGE_SIZE = "2"
    serve(fake_sabito, mapping, [sabito_record(n) for n in range(4)])

    # The second request (offset 1: re-reading one record of the first page of 2).
    fake_sabito.bodies_at_offset[1] = '{"unexpected": true}'

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert not result.success and result.created == 2
    assert Customer.objects.count() == 2
    mapping.refresh_from_db()
    assert "lastSyncedAt" not in mapping.metadata
    run = SyncRun.objects.get()
    assert (run.status, run.created) == ("failed", 2)


def test_rejected_api_key_fails_at_once_and_says_so(fake_sabito, mapping):
    fake_sabito.answer_next(401, '{"error": "invalid API key"}', times=5)

    result = sync_mapping(mapping=mapping)

    assert not result.success and not result.retryable
    assert "rejected the API key" in result.error and "biz-123" in result.error
    assert len(fake_sabito.requests) == 1


def test_server_error_is_retried_and_the_sync_succeeds(fake_sabito, mapping):
    fake_sabito.answer_next(500)
    serve(fake_sabito, mapping, [sabito_record(1)])

    result = sync_mapping(mapping=mapping)

    assert result.success and result.created == 1


def test_persistent_server_errors_fail_the_sync_as_retryable(fake_sabito, mapping):
    fake_sabito.answer_next(503, times=10)

    result = sync_mapping(mapping=mapping)

    assert not result.success and result.retryable
    assert len(fake_sabito.requests) == 3  # one try and SABITO_MAX_RETRIES=2 retries


def test_sync_all_syncs_every_active_mapping_and_one_failure_does_not_stop_the_others(fake_sabito):
    broken = SabitoMappingFactory(business_name="A broken", sabito_business_id="biz-broken")
    healthy = SabitoMappingFactory(business_name="B healthy", sabito_business_id="biz-healthy")
    SabitoMappingFactory(business_name="C inactive", sabito_business_id="biz-off", is_active=False)
    fake_sabito.records["biz-healthy"] = [sabito_record(1)]
    fake_sabito.answer_next(200, "not json", times=3)

    results = sync_all_mappings()

    assert [(r.business_id, r.success) for r in results] == [("biz-broken", False), ("biz-healthy", True)]
    assert Customer.objects.filter(tenant=healthy.tenant).count() == 1
    assert not Customer.objects.filter(tenant=broken.tenant).exists()
    assert not any(request["businessId"] == "biz-off" for request in fake_sabito.requests)


def test_a_second_sync_while_one_runs_is_refused_and_recorded(fake_sabito, mapping):
    holder = SyncRun.objects.create(
        mapping=mapping, trigger="beat", status="running", started_at=timezone.now(), heartbeat_at=timezone.now()
    )

    with pytest.raises(SyncAlreadyRunning, match="already running for iCreations Global"):
        sync_mapping(mapping=mapping)

    assert fake_sabito.requests == []
    refused = SyncRun.objects.get(status="already_running")
    assert str(holder.pk) in refused.error_message


def test_sync_all_reports_an_already_running_mapping_without_stopping(fake_sabito, mapping):
    SyncRun.objects.create(
        mapping=mapping, trigger="beat", status="running", started_at=timezone.now(), heartbeat_at=timezone.now()
    )

    [result] = sync_all_mappings()

    assert not result.success and result.already_running
    assert "already running" in sync_result_data(result)["error"]


def test_a_stale_running_run_is_taken_over(fake_sabito, mapping, settings):
    settings.SABITO_STALE_RUN_AFTER = "60"
    long_ago = timezone.now() - timedelta(minutes=5)
    dead = SyncRun.objects.create(
        mapping=mapping, trigger="beat", status="running", started_at=long_ago, heartbeat_at=long_ago
    )
    serve(fake_sabito, mapping, [sabito_record(1)])

    result = sync_mapping(mapping=mapping)

    assert result.success
    dead.refresh_from_db()
    assert dead.status == "failed" and "no progress since" in dead.error_message


def test_log_lines_follow_the_guide(fake_sabito, mapping, caplog):
    serve(fake_sabito, mapping, [sabito_record(1)])
    caplog.set_level(logging.INFO, logger="sabito_sync")

    sync_all_mappings()

    lines = [record.getMessage() for record in caplog.records if record.name.startswith("sabito_sync")]
    assert lines[0] == "[Sabito Sync] Starting sync for all tenants..."
    assert lines[1] == "[Sabito Sync] Found 1 tenant mappings to sync"
    assert lines[2].startswith("[Sabito Sync] Starting sync for business: iCreations Global (biz-123)")
    assert lines.count("[Sabito Sync] Found 1 customers to sync") == 1
    assert (
        "[Sabito Sync] Sync completed for iCreations Global: "
        "{ processed: 1, created: 1, updated: 0, skipped: 0, errors: 0 }"
    ) in lines
    assert lines[-1] == (
        "[Sabito Sync] All tenants sync completed: { totalTenants: 1, totalCreated: 1, totalUpdated: 0, totalErrors: 0 }"
    )


def test_api_key_appears_in_no_log_line_or_result(fake_sabito, mapping, caplog):
    caplog.set_level(logging.DEBUG)
    fake_sabito.answer_next(401, times=1)
    failed = sync_mapping(mapping=mapping)
    fake_sabito.answer_next(200, "garbage", times=3)
    garbled = sync_mapping(mapping=mapping)
    serve(fake_sabito, mapping, [sabito_record(1)])
    ok = sync_mapping(mapping=mapping)

    everything = caplog.text + repr([sync_result_data(r) for r in (failed, garbled, ok)])
    everything += repr(list(SyncRun.objects.values()))
    assert SABITO_TEST_KEY not in everything


def test_a_sync_that_finds_nothing_says_so(fake_sabito, mapping, caplog):
    serve(fake_sabito, mapping, [])
    caplog.set_level(logging.INFO, logger="sabito_sync")

    sync_mapping(mapping=mapping)

    lines = [record.getMessage() for record in caplog.records if record.name.startswith("sabito_sync")]
    assert "[Sabito Sync] Found 0 customers to sync" in lines
    assert not any("(offset" in line for line in lines)  # the per-page lines are at DEBUG
