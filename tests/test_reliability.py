"""Whatever Sabito does, after the next successful sync the tenant holds exactly
Sabito's customers, with no duplicates; a failed sync never moves the watermark.
Every test here talks to the project's simulator over real HTTP."""

import random

import pytest
from django.db import OperationalError, connection
from django.db.models import Count, QuerySet
from django.utils import timezone

from sabito_sync.engine.records import SYNCED_FIELDS, InvalidRecord, customer_values
from sabito_sync.engine.sync import sync_mapping
from sabito_sync.models import Customer, SyncRun
from sabito_sync.runs.result import result_data as sync_result_data
from sabito_sync.services.syncs import wait_for_runs

from .factories import SabitoMappingFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def mapping(sabito_simulator, settings):
    settings.SABITO_PAGE_SIZE = "20"
    settings.SABITO_MAX_RETRIES = "3"
    business_id = sabito_simulator.business_ids[0]
    return SabitoMappingFactory(
        sabito_business_id=business_id, business_name=sabito_simulator.business_names[business_id]
    )


def expected_customers(simulator, business_id) -> dict:
    """What the tenant must hold: the simulator's current records, mapped as the guide says."""
    expected = {}
    for record in simulator.customers(business_id):
        values = customer_values(record, business_id=business_id)
        expected[values["sabito_customer_id"]] = tuple(values[name] for name in SYNCED_FIELDS)
    return expected


def stored_customers(mapping) -> dict:
    customers = Customer.objects.filter(tenant=mapping.tenant, sabito_missing_since__isnull=True)
    return {
        customer.sabito_customer_id: tuple(getattr(customer, name) for name in SYNCED_FIELDS) for customer in customers
    }


def assert_tenant_matches_sabito(mapping, simulator):
    assert stored_customers(mapping) == expected_customers(simulator, mapping.sabito_business_id)
    duplicates = Customer.objects.values("tenant", "sabito_customer_id").annotate(n=Count("id")).filter(n__gt=1)
    assert not duplicates.exists()


def watermark(mapping):
    mapping.refresh_from_db()
    return mapping.metadata.get("lastSyncedAt")


def sync_until_success(mapping, *, attempts: int, full_sync: bool = False):
    """Sync again after each failure, checking that no failure moved the watermark."""
    failures = []
    for _ in range(attempts):
        before = watermark(mapping)
        result = sync_mapping(mapping=mapping, full_sync=full_sync)
        if result.success:
            return result, failures
        assert watermark(mapping) == before, f"a failed sync moved the watermark: {result.error}"
        failures.append(result.error)
    pytest.fail(f"no successful sync in {attempts} attempts: {failures}")


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({"error_rate": 0.3}, id="500s"),
        pytest.param({"rate_limit_rate": 0.4, "retry_after": 0}, id="429-bursts-with-retry-after"),
        pytest.param({"timeout_rate": 0.2, "timeout_seconds": 1.0}, id="read-timeouts"),
        pytest.param({"drop_rate": 0.3}, id="connections-dropped-mid-body"),
        pytest.param({"truncated_rate": 0.3}, id="truncated-json"),
        pytest.param({"garbage_rate": 0.3}, id="non-json-bodies"),
        pytest.param({"slow_seconds": 0.05}, id="slow-pages"),
    ],
)
def test_sync_survives_the_fault(mapping, sabito_simulator, settings, faults):
    settings.SABITO_READ_TIMEOUT = "0.25"
    settings.SABITO_PAGE_SIZE = "8"
    sabito_simulator.set_faults(faults | {"seed": 11})

    sync_until_success(mapping, attempts=8)

    assert_tenant_matches_sabito(mapping, sabito_simulator)
    assert sum(sabito_simulator.stats["faultsInjected"].values()) > 0 or "slow_seconds" in faults


def test_records_edited_while_paging_are_not_lost(mapping, sabito_simulator):
    sync_mapping(mapping=mapping, full_sync=True)
    # During the next sync, after its second request, 6 records it has not reached
    # or has passed are edited and jump to the end of the order: offset drift.
    sabito_simulator.set_faults({"edit_during_paging": {"afterRequests": 2, "count": 6}})

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success
    assert sabito_simulator.stats["driftEditedIds"], "the simulator did not edit anything mid-run"
    assert set(stored_customers(mapping)) == set(expected_customers(sabito_simulator, mapping.sabito_business_id))
    # The edits themselves happened after the run started: the next incremental
    # sync (watermark = start minus overlap) brings them in.
    sabito_simulator.set_faults(None)
    assert sync_mapping(mapping=mapping).success
    assert_tenant_matches_sabito(mapping, sabito_simulator)


def test_drift_during_a_first_sync_loses_nothing(mapping, sabito_simulator):
    sabito_simulator.set_faults({"edit_during_paging": {"afterRequests": 1, "count": 8}})

    result = sync_mapping(mapping=mapping)

    assert result.success
    assert set(stored_customers(mapping)) == set(expected_customers(sabito_simulator, mapping.sabito_business_id))


def test_chaos_then_one_clean_sync_leaves_exactly_sabitos_customers(mapping, sabito_simulator, settings):
    settings.SABITO_READ_TIMEOUT = "0.25"
    business_id = mapping.sabito_business_id
    chaos = random.Random(2026)
    outcomes = []
    for round_number in range(8):
        sabito_simulator.edit(business_id, chaos.randint(0, 8))
        sabito_simulator.add(business_id, chaos.randint(0, 4))
        rates = [chaos.uniform(0.05, 0.12) for _ in range(5)]
        sabito_simulator.set_faults(
            {
                "error_rate": rates[0],
                "rate_limit_rate": rates[1],
                "retry_after": 0,
                "drop_rate": rates[2],
                "truncated_rate": rates[3],
                "garbage_rate": rates[4],
                "timeout_rate": 0.03,
                "timeout_seconds": 0.5,
                "edit_during_paging": {"afterRequests": chaos.randint(1, 3), "count": chaos.randint(1, 5)},
                "seed": round_number,
            }
        )
        before = watermark(mapping)
        result = sync_mapping(mapping=mapping, full_sync=round_number == 0)
        if not result.success:
            assert watermark(mapping) == before
        outcomes.append(result.success)

    sabito_simulator.set_faults(None)
    final = sync_mapping(mapping=mapping)

    assert final.success
    assert_tenant_matches_sabito(mapping, sabito_simulator)
    assert not all(outcomes), "the chaos never made a sync fail; raise the fault rates"
    assert SyncRun.objects.filter(mapping=mapping, status="failed").count() == outcomes.count(False)


def test_hostile_records_are_error_entries_and_the_good_ones_are_saved(mapping, sabito_simulator):
    sabito_simulator.set_faults({"bad_records_rate": 0.2, "seed": 5})

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success and result.errors > 0
    assert all(detail["reason"] for detail in result.error_details)
    # Every record saved is a good one, saved exactly as Sabito has it; the page
    # mates of the bad ones were not held back.
    stored, expected = stored_customers(mapping), expected_customers(sabito_simulator, mapping.sabito_business_id)
    assert stored and all(stored[sabito_id] == expected[sabito_id] for sabito_id in stored)
    assert len(stored) == result.created
    # Sabito fixes its data: the next full sync brings the rest.
    sabito_simulator.set_faults(None)
    assert sync_mapping(mapping=mapping, full_sync=True).success
    assert_tenant_matches_sabito(mapping, sabito_simulator)


def test_hostile_record_variants_each_have_a_reason():
    from sabito_simulator.faults import hostile_variant

    chaos = random.Random(3)
    good = {"id": "c1", "email": "a@example.com", "name": "A", "country": "USA"}
    reasons = set()
    for _ in range(200):
        try:
            customer_values(hostile_variant(dict(good), chaos), business_id="b")
        except InvalidRecord as exc:
            reasons.add(str(exc).split(" ")[0])
    assert len(reasons) >= 3


def test_a_very_large_page_is_synced(sabito_simulator, settings):
    settings.SABITO_PAGE_SIZE = "1000"
    business_id = sabito_simulator.business_ids[1]
    sabito_simulator.add(business_id, 1500)
    mapping = SabitoMappingFactory(sabito_business_id=business_id)

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success and result.created == len(sabito_simulator.customers(business_id))
    assert_tenant_matches_sabito(mapping, sabito_simulator)


def test_database_failing_mid_sync_fails_the_run_cleanly_and_the_next_run_recovers(mapping, sabito_simulator):
    inserts = []

    def fail_second_page_insert(execute, sql, params, many, context):
        statement = sql.lstrip().upper()
        if "SABITO_SYNC_CUSTOMER" in statement and not statement.startswith("SELECT"):
            inserts.append(sql)
            if len(inserts) == 2:
                raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail_second_page_insert):
        failed = sync_mapping(mapping=mapping, full_sync=True)

    assert not failed.success and failed.retryable
    assert "Database error" in failed.error
    assert watermark(mapping) is None
    assert SyncRun.objects.get().status == "failed"
    assert sync_mapping(mapping=mapping).success
    assert_tenant_matches_sabito(mapping, sabito_simulator)


def terminate_our_backend() -> None:
    """Terminate, from another connection, the PostgreSQL backend of Django's connection."""
    import psycopg

    settings_dict = connection.settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"] or "127.0.0.1",
        port=settings_dict["PORT"] or 5432,
        user=settings_dict["USER"] or "postgres",
        dbname=settings_dict["NAME"],
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (connection.connection.info.backend_pid,))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="terminates a real PostgreSQL backend")
def test_postgresql_connection_killed_mid_sync_fails_cleanly_and_the_next_run_recovers(mapping, sabito_simulator):
    pages = []

    def kill_our_connection_after_first_page(result):
        pages.append(result.processed)
        if len(pages) == 1:
            terminate_our_backend()

    failed = sync_mapping(mapping=mapping, full_sync=True, on_page=kill_our_connection_after_first_page)

    assert not failed.success and failed.retryable
    run = SyncRun.objects.get()
    assert run.status == "failed"  # recorded over a fresh connection
    assert watermark(mapping) is None
    assert sync_mapping(mapping=mapping).success
    assert_tenant_matches_sabito(mapping, sabito_simulator)


def test_customers_deleted_in_sabito_are_marked_missing_after_a_full_sync_never_deleted(mapping, sabito_simulator):
    business_id = mapping.sabito_business_id
    sync_mapping(mapping=mapping, full_sync=True)
    deleted = set(sabito_simulator.delete(business_id, 4))

    incremental = sync_mapping(mapping=mapping)
    assert incremental.marked_missing == 0  # an incremental feed cannot tell
    full = sync_mapping(mapping=mapping, full_sync=True)

    assert full.success and full.marked_missing == 4 and sync_result_data(full)["markedMissing"] == 4
    missing = set(
        Customer.objects.filter(sabito_missing_since__isnull=False).values_list("sabito_customer_id", flat=True)
    )
    assert missing == deleted
    assert Customer.objects.count() == len(sabito_simulator.customers(business_id)) + 4
    assert SyncRun.objects.filter(full_sync=True).first().marked_missing == 4
    assert_tenant_matches_sabito(mapping, sabito_simulator)


def test_a_failed_full_sync_marks_nothing_missing(mapping, sabito_simulator):
    sync_mapping(mapping=mapping, full_sync=True)
    sabito_simulator.set_faults({"garbage_rate": 1.0})

    failed = sync_mapping(mapping=mapping, full_sync=True)

    assert not failed.success
    assert not Customer.objects.filter(sabito_missing_since__isnull=False).exists()


def test_a_customer_back_in_sabito_is_no_longer_missing(mapping, sabito_simulator):
    sync_mapping(mapping=mapping, full_sync=True)
    customer = Customer.objects.filter(tenant=mapping.tenant).first()
    Customer.objects.filter(pk=customer.pk).update(sabito_missing_since="2026-01-01T00:00:00Z")

    result = sync_mapping(mapping=mapping, full_sync=True)

    customer.refresh_from_db()
    assert customer.sabito_missing_since is None and result.updated == 1


def a_finished_run(mapping) -> SyncRun:
    now = timezone.now()
    return SyncRun.objects.create(
        mapping=mapping, trigger="api", status="succeeded", started_at=now, heartbeat_at=now, finished_at=now
    )


def test_waiting_for_runs_survives_a_dropped_connection_and_looks_again(mapping, monkeypatch):
    run = a_finished_run(mapping)
    real_in_bulk, looks = QuerySet.in_bulk, []

    def dropped_once(queryset, *args, **kwargs):
        looks.append(1)
        if len(looks) == 1:
            raise OperationalError("terminating connection due to administrator command")
        return real_in_bulk(queryset, *args, **kwargs)

    monkeypatch.setattr(QuerySet, "in_bulk", dropped_once)

    (seen,) = wait_for_runs(runs=[SyncRun(pk=run.pk, mapping=mapping, status="queued")], timeout=30)

    assert seen.status == "succeeded" and len(looks) == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="terminates a real PostgreSQL backend")
def test_a_sync_request_whose_database_connection_is_terminated_while_it_waits_is_answered(mapping):

    run = a_finished_run(mapping)
    connection.ensure_connection()
    terminate_our_backend()

    (seen,) = wait_for_runs(runs=[SyncRun(pk=run.pk, mapping=mapping, status="queued")], timeout=30)

    assert seen.status == "succeeded"
