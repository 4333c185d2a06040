"""The beat tick's fan-out: chunks of mappings per task, each mapping still run, locked,
retried and counted on its own. The chunk task runs in this process (`apply`), with
Sabito faked at the HTTP boundary; the real worker's fan-out is in test_tasks/test_logs."""

import logging
from unittest.mock import patch

import pytest
from django.utils import timezone

from sabito_sync.models import Customer, SyncRun, SyncTick
from sabito_sync.runs.ticks import start_tick
from sabito_sync.tasks import fanout_chunks, sync_all_mappings_task, sync_mapping_chunk_task, sync_mapping_task

from .factories import SabitoMappingFactory, TenantFactory, sabito_record

pytestmark = pytest.mark.django_db

SABITO_URL = "https://sabito.test/api/customers"


@pytest.fixture
def mappings(fake_sabito):
    """Three mappings in the fan-out's order, each with one customer in Sabito."""
    tenant = TenantFactory()
    made = [
        SabitoMappingFactory(tenant=tenant, sabito_business_id=f"biz-{n}", business_name=f"Business {n}")
        for n in range(3)
    ]
    for n, mapping in enumerate(made):
        fake_sabito.records[mapping.sabito_business_id] = [sabito_record(n, email=f"person{n}@biz{n}.example")]
    return made


def ids(mappings):
    return [str(mapping.pk) for mapping in mappings]


def run_chunk(mappings, *, tick_id=None):
    kwargs = {"tick_id": tick_id} if tick_id else {}
    return sync_mapping_chunk_task.apply(args=[ids(mappings), False, "beat"], kwargs=kwargs).get()


def fail_business(fake_sabito, business_id, status):
    """Sabito answers `status` to every request for one business, and serves the others."""
    serve = fake_sabito.serve

    def serve_but_one(request):
        if f"businessId={business_id}" in request.url:
            return status, {"Content-Type": "application/json"}, '{"error": "boom"}'
        return serve(request)

    fake_sabito.mock.remove(fake_sabito.mock.registered()[0])
    fake_sabito.mock.add_callback("GET", SABITO_URL, callback=serve_but_one)


def test_the_fanout_queues_chunks_of_mapping_ids_that_cover_every_active_mapping_once(settings):
    settings.SABITO_FANOUT_CHUNK_SIZE = "2"
    active = SabitoMappingFactory.create_batch(250, tenant=TenantFactory())
    SabitoMappingFactory(sabito_business_id="biz-paused", is_active=False)

    with patch.object(sync_mapping_chunk_task, "apply_async") as apply_async:
        sync_all_mappings_task.apply(kwargs={"full_sync": False, "trigger": "beat"})

    chunks = [call.kwargs["args"][0] for call in apply_async.call_args_list]
    assert sorted(mapping_id for chunk in chunks for mapping_id in chunk) == sorted(ids(active))
    assert {len(chunk) for chunk in chunks} == {2}
    tick = SyncTick.objects.get()
    assert tick.expected == 250
    assert {call.kwargs["kwargs"]["tick_id"] for call in apply_async.call_args_list} == {str(tick.pk)}
    assert {tuple(call.kwargs["args"][1:]) for call in apply_async.call_args_list} == {(False, "beat")}


def test_a_few_mappings_are_spread_over_small_chunks_so_workers_share_them():
    assert fanout_chunks(["a", "b", "c"], chunk_size=50) == [["a"], ["b"], ["c"]]
    assert {len(chunk) for chunk in fanout_chunks([str(n) for n in range(1000)], chunk_size=50)} == {10}
    assert {len(chunk) for chunk in fanout_chunks([str(n) for n in range(10_000)], chunk_size=50)} == {50}
    assert fanout_chunks([], chunk_size=50) == []


def test_each_mapping_of_a_chunk_gets_its_own_run_watermark_and_result(mappings):
    outcome = run_chunk(mappings)

    assert outcome == {"mappings": 3, "succeeded": 3, "failed": 0, "handedOver": 0}
    for mapping in mappings:
        run = SyncRun.objects.get(mapping=mapping)
        assert (run.status, run.trigger, run.created) == ("succeeded", "beat", 1)
        mapping.refresh_from_db()
        assert mapping.last_synced_at is not None and mapping.metadata["lastSyncResult"]["created"] == 1
        assert Customer.objects.filter(sabito_business_id=mapping.sabito_business_id).count() == 1


def test_a_mapping_failing_or_already_running_never_affects_the_others_of_its_chunk(mappings, fake_sabito):
    rejected, busy, fine = mappings
    fail_business(fake_sabito, rejected.sabito_business_id, 401)
    now = timezone.now()
    holder = SyncRun.objects.create(mapping=busy, trigger="api", status="running", started_at=now, heartbeat_at=now)

    with patch.object(sync_mapping_task, "apply_async") as apply_async:
        outcome = run_chunk(mappings)

    assert outcome == {"mappings": 3, "succeeded": 1, "failed": 2, "handedOver": 0}
    apply_async.assert_not_called()  # a rejected key is not transient
    assert "HTTP 401" in SyncRun.objects.get(mapping=rejected).error_message
    assert sorted(busy.runs.values_list("status", flat=True)) == ["already_running", "running"]
    assert SyncRun.objects.get(pk=holder.pk).status == "running"
    assert SyncRun.objects.get(mapping=fine).status == "succeeded"
    fine.refresh_from_db()
    assert fine.metadata["lastSyncResult"]["success"] is True


def test_a_transient_failure_in_a_chunk_retries_that_mapping_alone_as_its_own_task(mappings, fake_sabito, settings):
    settings.SABITO_TASK_RETRY_DELAY = "30"
    down, *others = mappings
    fail_business(fake_sabito, down.sabito_business_id, 503)
    tick_id = start_tick(expected=3, full_sync=False, trigger="beat")

    with patch.object(sync_mapping_task, "apply_async") as apply_async:
        outcome = run_chunk(mappings, tick_id=tick_id)

    assert outcome["handedOver"] == 1 and outcome["succeeded"] == 2
    apply_async.assert_called_once()
    retry = apply_async.call_args.kwargs
    assert retry["args"] == [str(down.pk), False, "beat"] and retry["kwargs"] == {"tick_id": tick_id}
    # It waits and gives up as its own task's first retry would.
    assert (retry["countdown"], retry["retries"]) == (30, 1)
    assert SyncRun.objects.get(mapping=down).status == "failed"
    assert [SyncRun.objects.get(mapping=mapping).status for mapping in others] == ["succeeded", "succeeded"]
    # The tick waits for the retried mapping.
    tick = SyncTick.objects.get(pk=tick_id)
    assert (tick.finished, tick.completed_at) == (2, None)

    fail_business(fake_sabito, "nobody", 503)  # Sabito is back for every business
    sync_mapping_task.apply(args=retry["args"], kwargs=retry["kwargs"], retries=retry["retries"])

    tick.refresh_from_db()
    assert tick.finished == 3 and tick.completed_at is not None
    assert sorted(down.runs.values_list("status", flat=True)) == ["failed", "succeeded"]


def test_a_chunk_delivered_twice_syncs_again_and_counts_each_mapping_once(mappings, caplog):
    tick_id = start_tick(expected=3, full_sync=False, trigger="beat")

    with caplog.at_level(logging.INFO, logger="sabito_sync.ticks"):
        run_chunk(mappings, tick_id=tick_id)
        again = run_chunk(mappings, tick_id=tick_id)

    assert again["succeeded"] == 3
    tick = SyncTick.objects.get(pk=tick_id)
    assert (tick.finished, tick.created, tick.errors) == (3, 3, 0)
    assert len([r for r in caplog.records if "All tenants sync completed" in r.getMessage()]) == 1
    for mapping in mappings:
        # The second delivery's runs found the customers already synced.
        assert sorted(mapping.runs.values_list("skipped", flat=True)) == [0, 1]


def test_a_chunk_counts_a_mapping_deleted_since_the_fanout_as_failed(mappings):
    tick_id = start_tick(expected=3, full_sync=False, trigger="beat")
    chunk = ids(mappings)
    mappings[1].delete()

    outcome = sync_mapping_chunk_task.apply(args=[chunk, False, "beat"], kwargs={"tick_id": tick_id}).get()

    assert (outcome["succeeded"], outcome["failed"]) == (2, 1)
    tick = SyncTick.objects.get(pk=tick_id)
    assert (tick.finished, tick.errors) == (3, 1) and tick.completed_at is not None


@pytest.mark.project
def test_each_mapping_of_a_chunk_logs_with_its_own_ids(mappings, caplog):
    with caplog.at_level(logging.INFO, logger="sabito_sync"):
        run_chunk(mappings)

    starts = [r for r in caplog.records if "Starting sync for business" in r.getMessage()]
    from sabito_sync.logcontext import SyncContextFilter

    for record in starts:
        SyncContextFilter().filter(record)
    assert [record.mapping_id for record in starts] == ids(mappings)
    assert [record.run_id for record in starts] == [
        str(SyncRun.objects.get(mapping=mapping).pk) for mapping in mappings
    ]


def test_a_chunk_whose_worker_is_shutting_down_queues_its_remaining_mappings_again(mappings, monkeypatch):
    from sabito_sync import tasks
    from sabito_sync.runs.result import SyncResult

    tick_id = start_tick(expected=3, full_sync=False, trigger="beat")
    synced = []

    def interrupted(*, mapping, **kwargs):
        synced.append(mapping)
        return SyncResult(
            business_id=mapping.sabito_business_id,
            business_name=mapping.business_name,
            error="Interrupted",
            stopped="interrupted",
        )

    monkeypatch.setattr(tasks, "sync_mapping", interrupted)
    with patch.object(sync_mapping_chunk_task, "apply_async") as apply_async:
        outcome = run_chunk(mappings, tick_id=tick_id)

    assert synced == mappings[:1]  # the worker waits for the task: it stops after the mapping it was on
    assert outcome["handedOver"] == 2
    apply_async.assert_called_once_with(args=[ids(mappings[1:]), False, "beat"], kwargs={"tick_id": tick_id})
    assert SyncTick.objects.get(pk=tick_id).finished == 1  # the rest count when their new chunk ends


def test_a_chunk_syncs_a_mapping_with_a_queued_run_as_that_run_and_its_task_then_does_nothing(mappings, fake_sabito):
    waiting = mappings[1]
    now = timezone.now()
    queued = SyncRun.objects.create(
        mapping=waiting, trigger="api", status="queued", full_sync=True, started_at=now, heartbeat_at=now
    )

    outcome = run_chunk(mappings)
    requests_of_the_chunk = len(fake_sabito.requests)
    later = sync_mapping_task.apply(args=[str(waiting.pk), True, "api"], kwargs={"run_id": str(queued.pk)}).get()

    assert outcome == {"mappings": 3, "succeeded": 3, "failed": 0, "handedOver": 0}
    (run,) = SyncRun.objects.filter(mapping=waiting)  # one trigger, one run
    assert (run.pk, run.status, run.trigger, run.full_sync) == (queued.pk, "succeeded", "api", True)
    assert later["status"] == "succeeded" and "not queued" in later["error"]
    assert len(fake_sabito.requests) == requests_of_the_chunk  # no second scan
