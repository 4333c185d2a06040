"""A run's life past the happy path: it proves it is alive while it waits, stops when
cancelled or when its worker shuts down, resumes from its checkpoint, is reaped when
its worker dies, and ends whatever goes wrong at its end."""

import time
from datetime import timedelta
from unittest.mock import patch

import pytest
from django.utils import timezone

from sabito_sync import metadata
from sabito_sync.engine.sync import sync_mapping
from sabito_sync.models import Customer, SyncRun
from sabito_sync.runs.reaper import request_stop_of_worker_runs
from sabito_sync.tasks import reap_dead_runs_task, sync_mapping_task

from .conftest import wait_for
from .factories import SabitoMappingFactory, sabito_record

PAGE = 100


@pytest.fixture
def mapping(db):
    return SabitoMappingFactory(sabito_business_id="biz-1", business_name="Alpha")


def offsets_asked(fake_sabito) -> list[int]:
    return [int(request["offset"]) for request in fake_sabito.requests]


def replace_sabito(fake_sabito, callback) -> None:
    """Serve Sabito's customers through `callback(request)` instead of the fake's own."""
    fake_sabito.mock.remove(fake_sabito.mock.registered()[0])
    fake_sabito.mock.add_callback("GET", "https://sabito.test/api/customers", callback=callback)


# --- Resume ---------------------------------------------------------------------------------


def test_a_full_sync_failing_at_page_12_resumes_there_and_ends_exact(mapping, fake_sabito):
    fake_sabito.records["biz-1"] = [sabito_record(n) for n in range(2000)]
    fake_sabito.down_from_offset = 1100  # page 12 (records 1,100 to 1,199) never comes

    failed = sync_mapping(mapping=mapping, full_sync=True)
    assert not failed.success and Customer.objects.count() == 1100
    fake_sabito.down_from_offset = None
    fake_sabito.requests.clear()

    resumed = sync_mapping(mapping=mapping, full_sync=True)

    assert resumed.success
    assert min(offsets_asked(fake_sabito)) >= 1100 - 2 * PAGE  # at most a page or two before where it stopped
    assert Customer.objects.count() == 2000
    assert set(Customer.objects.values_list("sabito_customer_id", flat=True)) == {f"cust-{n}" for n in range(2000)}
    run = SyncRun.objects.get(pk=resumed.run_id)
    assert run.full_sync and run.updated_after is None
    assert f"Resumed from run {failed.run_id} (failed) at offset 1100" in run.note
    mapping.refresh_from_db()
    assert mapping.last_synced_at is not None


def test_an_incremental_sync_resumes_with_the_failed_runs_updated_after(mapping, fake_sabito):
    mapping.metadata = {"lastSyncedAt": "2026-11-30T12:00:00.000Z"}
    mapping.save()
    fake_sabito.records["biz-1"] = [sabito_record(n) for n in range(500)]
    fake_sabito.down_from_offset = 300
    sync_mapping(mapping=mapping)
    fake_sabito.down_from_offset = None
    fake_sabito.requests.clear()

    resumed = sync_mapping(mapping=mapping)

    assert resumed.success and Customer.objects.count() == 500
    assert {request["updatedAfter"] for request in fake_sabito.requests} == {"2026-11-30T12:00:00.000Z"}
    assert min(offsets_asked(fake_sabito)) >= 200 - PAGE


def test_an_old_checkpoint_is_not_resumed(mapping, fake_sabito, settings):
    settings.SABITO_RESUME_WITHIN = "3600"
    fake_sabito.records["biz-1"] = [sabito_record(n) for n in range(300)]
    fake_sabito.down_from_offset = 200
    failed = sync_mapping(mapping=mapping, full_sync=True)
    SyncRun.objects.filter(pk=failed.run_id).update(finished_at=timezone.now() - timedelta(hours=2))
    fake_sabito.down_from_offset = None
    fake_sabito.requests.clear()

    again = sync_mapping(mapping=mapping, full_sync=True)

    assert again.success and min(offsets_asked(fake_sabito)) == 0
    assert SyncRun.objects.get(pk=again.run_id).note == ""


def test_a_full_sync_asked_for_does_not_carry_on_an_incremental_one(mapping, fake_sabito):
    mapping.metadata = {"lastSyncedAt": "2026-11-30T12:00:00.000Z"}
    mapping.save()
    fake_sabito.records["biz-1"] = [sabito_record(n) for n in range(300)]
    fake_sabito.down_from_offset = 200
    sync_mapping(mapping=mapping)
    fake_sabito.down_from_offset = None
    fake_sabito.requests.clear()

    full = sync_mapping(mapping=mapping, full_sync=True)

    assert full.success and min(offsets_asked(fake_sabito)) == 0
    assert all("updatedAfter" not in request for request in fake_sabito.requests)


def test_a_resumed_full_sync_marks_nobody_missing(mapping, fake_sabito):
    fake_sabito.records["biz-1"] = [sabito_record(n) for n in range(300)]
    fake_sabito.down_from_offset = 200
    sync_mapping(mapping=mapping, full_sync=True)
    fake_sabito.down_from_offset = None
    fake_sabito.records["biz-1"] = fake_sabito.records["biz-1"][150:]  # the first 150 are gone from Sabito

    resumed = sync_mapping(mapping=mapping, full_sync=True)

    assert resumed.success and resumed.marked_missing == 0
    assert not Customer.objects.filter(sabito_missing_since__isnull=False).exists()
    # The next complete full sync can tell, and does.
    assert sync_mapping(mapping=mapping, full_sync=True).marked_missing == 150


def test_a_repointed_mapping_does_not_resume_the_old_business(mapping, fake_sabito):
    from sabito_sync.services.mappings import update_mapping

    fake_sabito.records["biz-1"] = [sabito_record(n) for n in range(300)]
    fake_sabito.records["biz-2"] = [sabito_record(n, id=f"b2-{n}") for n in range(300)]
    fake_sabito.down_from_offset = 200
    sync_mapping(mapping=mapping, full_sync=True)
    fake_sabito.down_from_offset = None
    mapping = update_mapping(actor=None, mapping=mapping, sabito_business_id="biz-2")
    fake_sabito.requests.clear()

    result = sync_mapping(mapping=mapping, full_sync=True)

    assert result.success and min(offsets_asked(fake_sabito)) == 0
    assert "Re-pointed" in SyncRun.objects.get(pk=result.run_id).note


# --- Every path ends the run ----------------------------------------------------------------


def test_a_failure_in_the_missing_marks_fails_the_run_and_keeps_the_watermark(mapping, fake_sabito, monkeypatch):
    fake_sabito.records["biz-1"] = [sabito_record(1)]

    def broken(**kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("sabito_sync.engine.sync.mark_missing_customers", broken)
    result = sync_mapping(mapping=mapping, full_sync=True)

    assert not result.success and "Could not mark the customers Sabito no longer has: disk on fire" in result.error
    run = SyncRun.objects.get(pk=result.run_id)
    assert run.status == SyncRun.Status.FAILED and run.finished_at is not None
    mapping.refresh_from_db()
    assert mapping.last_synced_at is None


def test_an_outcome_that_cannot_be_recorded_still_ends_the_run(mapping, fake_sabito, monkeypatch):
    fake_sabito.records["biz-1"] = [sabito_record(1)]

    def broken(*args, **kwargs):
        raise ValueError("summary refused")

    monkeypatch.setattr(metadata, "outcome_summary", broken)  # what every database's run end writes
    result = sync_mapping(mapping=mapping)

    run = SyncRun.objects.get(pk=result.run_id)
    assert run.status == SyncRun.Status.FAILED and run.finished_at is not None
    assert "its outcome could not be recorded: summary refused" in run.error_message


# --- Alive, cancelled, shut down: the heartbeat thread (real commits) ------------------------


def wait_for_the_heartbeat_to_read_it(run_id) -> None:
    """Until the run's heartbeat thread has read a request just committed: two beats
    after this call (the first may have read the row just before the request)."""
    seen = [SyncRun.objects.get(pk=run_id).heartbeat_at]

    def two_more_beats() -> bool:
        latest = SyncRun.objects.get(pk=run_id).heartbeat_at
        if latest != seen[-1]:
            seen.append(latest)
        return len(seen) >= 3

    wait_for(two_more_beats, timeout=60, interval=0.02, message="the heartbeat thread to read the request")


@pytest.fixture
def live_mapping(transactional_db, settings):
    settings.SABITO_HEARTBEAT_SECONDS = "0.1"
    return SabitoMappingFactory(sabito_business_id="biz-1", business_name="Alpha")


def test_a_slow_page_keeps_the_heartbeat_fresh(live_mapping, fake_sabito):
    fake_sabito.records["biz-1"] = [sabito_record(n) for n in range(250)]
    serve, seen = fake_sabito.serve, {}

    def slow_second_page(request):
        if "offset=90" in request.url and "before" not in seen:
            run = SyncRun.objects.get(mapping=live_mapping, status=SyncRun.Status.RUNNING)
            seen["before"] = run.heartbeat_at
            time.sleep(1.0)  # Sabito taking its time: no page is written meanwhile
            run.refresh_from_db()
            seen["after"] = run.heartbeat_at
        return serve(request)

    replace_sabito(fake_sabito, slow_second_page)

    assert sync_mapping(mapping=live_mapping, full_sync=True).success
    assert seen["after"] - seen["before"] >= timedelta(seconds=0.5)


def test_a_cancelled_run_stops_after_its_page_keeps_what_it_wrote_and_the_watermark(
    live_mapping, fake_sabito, settings
):
    settings.SABITO_WRITE_BATCH_RECORDS = str(2 * PAGE)  # a batch of two pages
    live_mapping.metadata = {"lastSyncedAt": "2026-11-30T12:00:00.000Z"}
    live_mapping.save()
    fake_sabito.records["biz-1"] = [sabito_record(n) for n in range(1000)]

    def cancel_after_the_second_page(result):
        if result.processed == 2 * PAGE:
            SyncRun.objects.filter(pk=result.run_id).update(cancel_requested_at=timezone.now())
            wait_for_the_heartbeat_to_read_it(result.run_id)

    result = sync_mapping(mapping=live_mapping, on_page=cancel_after_the_second_page)

    run = SyncRun.objects.get(pk=result.run_id)
    assert run.status == SyncRun.Status.CANCELLED and "Cancelled on request after 2 pages" in run.error_message
    assert run.pages_done == 2 and run.checkpoint["offset"] == 2 * PAGE
    assert Customer.objects.count() == 2 * PAGE
    live_mapping.refresh_from_db()
    assert live_mapping.metadata["lastSyncedAt"] == "2026-11-30T12:00:00.000Z"


def test_a_worker_shutting_down_interrupts_its_runs_after_their_page(live_mapping, fake_sabito, settings):
    settings.SABITO_WRITE_BATCH_RECORDS = str(PAGE)  # a batch of one page
    fake_sabito.records["biz-1"] = [sabito_record(n) for n in range(1000)]

    def shut_down_after_the_first_page(result):
        if result.processed == PAGE:
            assert request_stop_of_worker_runs(worker="celery@node-1") == 1
            wait_for_the_heartbeat_to_read_it(result.run_id)

    result = sync_mapping(mapping=live_mapping, worker="celery@node-1", on_page=shut_down_after_the_first_page)

    run = SyncRun.objects.get(pk=result.run_id)
    assert run.status == SyncRun.Status.INTERRUPTED and "its worker was shutting down" in run.error_message
    assert run.checkpoint["offset"] == PAGE


def test_a_pool_process_told_to_stop_interrupts_its_run_at_once_for_the_reaper(live_mapping, fake_sabito, settings):
    """What a pool process does on the first SIGTERM or SIGINT while it syncs: no
    database round trip, and the run is left for the reaper to resume."""
    from sabito_sync.receivers import PoolProcessStop

    settings.SABITO_WRITE_BATCH_RECORDS = str(PAGE)
    # (The test settings' heartbeat, 10 s, never beats within this sync: nothing comes through the row.)
    fake_sabito.records["biz-1"] = [sabito_record(n) for n in range(1000)]
    stop = PoolProcessStop()

    def signal_after_the_first_page(result):
        if result.processed == PAGE:
            stop.on_signal(15, None)

    result = sync_mapping(mapping=live_mapping, on_page=signal_after_the_first_page)

    run = SyncRun.objects.get(pk=result.run_id)
    assert (run.status, run.stop_reason, run.pages_done) == (SyncRun.Status.INTERRUPTED, "shutdown", 1)
    with patch.object(sync_mapping_task, "apply_async"):
        assert reap_dead_runs_task.apply().get() == [str(run.pk)]
    stop.task_ended()  # the next task's runs run
    assert sync_mapping(mapping=live_mapping).success


@pytest.mark.parametrize(
    ("stopped_by", "status", "said"),
    [
        (SystemExit(-241), SyncRun.Status.INTERRUPTED, "Interrupted: its process was stopped (SystemExit)"),
        (KeyboardInterrupt(), SyncRun.Status.CANCELLED, "Cancelled: interrupted at the console"),
    ],
)
def test_a_sync_stopped_from_outside_mid_batch_keeps_its_last_written_batch(
    live_mapping, fake_sabito, settings, stopped_by, status, said
):
    """Billiard's SIGTERM handler raises SystemExit in a pool process; Ctrl-C at the
    console raises KeyboardInterrupt in the command. Neither is a failure: the first
    is resumed by the reaper, the second was the operator's wish."""
    settings.SABITO_WRITE_BATCH_RECORDS = str(PAGE)
    fake_sabito.records["biz-1"] = [sabito_record(n) for n in range(1000)]

    def stop_after_the_second_page(result):
        if result.processed == 2 * PAGE:
            raise stopped_by

    with pytest.raises(type(stopped_by)):
        sync_mapping(mapping=live_mapping, on_page=stop_after_the_second_page)

    run = SyncRun.objects.get(mapping=live_mapping)
    assert run.status == status and run.error_message.startswith(said)
    assert run.checkpoint["offset"] == 2 * PAGE and Customer.objects.count() == 2 * PAGE
    with patch.object(sync_mapping_task, "apply_async"):
        queued_again = reap_dead_runs_task.apply().get()
    assert queued_again == ([str(run.pk)] if status == SyncRun.Status.INTERRUPTED else [])


def test_a_sync_stopped_mid_feed_resumes_after_its_last_committed_batch(live_mapping, fake_sabito, settings):
    settings.SABITO_PAGE_SIZE = "10"
    settings.SABITO_WRITE_BATCH_RECORDS = "30"  # batches of three pages
    fake_sabito.records["biz-1"] = [sabito_record(n) for n in range(100)]

    def cancel_after_the_first_batch(result):
        if result.processed == 30:
            SyncRun.objects.filter(pk=result.run_id).update(cancel_requested_at=timezone.now())
            wait_for_the_heartbeat_to_read_it(result.run_id)

    cancelled = sync_mapping(mapping=live_mapping, full_sync=True, on_page=cancel_after_the_first_batch)
    run = SyncRun.objects.get(pk=cancelled.run_id)
    assert run.status == SyncRun.Status.CANCELLED and (run.pages_done, run.checkpoint["offset"]) == (3, 30)
    assert Customer.objects.count() == 30
    fake_sabito.requests.clear()

    resumed = sync_mapping(mapping=live_mapping, full_sync=True)

    assert resumed.success and (resumed.created, resumed.processed) == (70, 70)
    assert min(offsets_asked(fake_sabito)) >= 30 - 10  # from the checkpoint (re-reading a short tail)
    assert f"Resumed from run {run.pk} (cancelled) at offset 30" in SyncRun.objects.get(pk=resumed.run_id).note
    assert Customer.objects.count() == 100


# --- The reaper --------------------------------------------------------------------------


def test_the_reaper_ends_dead_runs_and_queues_their_syncs_again(mapping):
    long_ago = timezone.now() - timedelta(minutes=5)
    dead = SyncRun.objects.create(
        mapping=mapping, trigger="beat", full_sync=True, started_at=long_ago, heartbeat_at=long_ago
    )
    other = SabitoMappingFactory(sabito_business_id="biz-live")
    now = timezone.now()
    alive = SyncRun.objects.create(mapping=other, trigger="beat", started_at=now, heartbeat_at=now)
    queued = []

    with patch.object(sync_mapping_task, "apply_async", lambda **kwargs: queued.append(kwargs)):
        reaped = reap_dead_runs_task.apply().get()

    assert reaped == [str(dead.pk)]
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == SyncRun.Status.FAILED and "its worker died" in dead.error_message
    assert alive.status == SyncRun.Status.RUNNING
    assert queued == [{"args": [str(mapping.pk), True, SyncRun.Trigger.RECOVERY]}]


def test_the_reaper_queues_an_interrupted_run_again_once(mapping):
    now = timezone.now()
    interrupted = SyncRun.objects.create(
        mapping=mapping,
        trigger="beat",
        status=SyncRun.Status.INTERRUPTED,
        started_at=now,
        heartbeat_at=now,
        finished_at=now,
        stop_reason="shutdown",
    )
    queued = []

    with patch.object(sync_mapping_task, "apply_async", lambda **kwargs: queued.append(kwargs)):
        first = reap_dead_runs_task.apply().get()
        second = reap_dead_runs_task.apply().get()

    assert (first, second) == ([str(interrupted.pk)], [])
    assert queued == [{"args": [str(mapping.pk), False, SyncRun.Trigger.RECOVERY]}]


def test_the_reaper_is_scheduled_every_minute_and_an_operators_pause_stands(db):
    from django.core.management import call_command
    from django_celery_beat.models import PeriodicTask

    from sabito_sync.services.schedule import REAPER_TASK_NAME, ensure_reaper_schedule

    ensure_reaper_schedule()
    task = PeriodicTask.objects.get(name=REAPER_TASK_NAME)
    assert (task.task, task.interval.every, task.interval.period, task.enabled) == (
        "sabito_sync.reap_dead_runs",
        60,
        "seconds",
        True,
    )
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=False)

    call_command("migrate", verbosity=0)
    ensure_reaper_schedule()

    assert PeriodicTask.objects.get(name=REAPER_TASK_NAME).enabled is False


def test_a_run_cancelled_while_queued_is_not_started(mapping, fake_sabito):
    now = timezone.now()
    run = SyncRun.objects.create(
        mapping=mapping,
        trigger="api",
        status=SyncRun.Status.CANCELLED,
        started_at=now,
        heartbeat_at=now,
        finished_at=now,
    )

    answer = sync_mapping_task.apply(args=[str(mapping.pk), False, "api"], kwargs={"run_id": str(run.pk)}).get()

    assert answer["success"] is False and answer["status"] == "cancelled"
    assert fake_sabito.requests == [] and SyncRun.objects.count() == 1
