"""Celery tasks through a real worker and broker, against the simulator over HTTP."""

import json

import pytest
from django_celery_beat.models import PeriodicTask

from sabito_sync.models import Customer, SabitoMapping, SyncRun
from sabito_sync.receivers import on_beat_start
from sabito_sync.services.schedule import PERIODIC_TASK_NAME, ensure_periodic_sync_schedule
from sabito_sync.tasks import sync_all_mappings_task, sync_mapping_task

from .conftest import wait_for
from .factories import SabitoMappingFactory, TenantFactory


def simulator_mappings(simulator, tenant=None):
    tenant = tenant or TenantFactory()
    return [
        SabitoMappingFactory(
            tenant=tenant, sabito_business_id=business_id, business_name=simulator.business_names[business_id]
        )
        for business_id in simulator.business_ids
    ]


def finished_runs(**filters):
    return list(SyncRun.objects.filter(**filters).exclude(status="running"))


@pytest.mark.e2e
def test_beat_fan_out_reaches_every_active_mapping(celery_worker_thread, sabito_simulator):
    first, second = simulator_mappings(sabito_simulator)
    SabitoMappingFactory(sabito_business_id="biz-paused", is_active=False)

    sync_all_mappings_task.apply_async(kwargs={"full_sync": False, "trigger": "beat"})

    runs = wait_for(
        lambda: len(finished_runs(trigger="beat")) == 2 and finished_runs(trigger="beat"), message="two runs"
    )
    assert {(run.mapping_id, run.status) for run in runs} == {(first.pk, "succeeded"), (second.pk, "succeeded")}
    for mapping in (first, second):
        served = sabito_simulator.customers(mapping.sabito_business_id)
        assert Customer.objects.filter(sabito_business_id=mapping.sabito_business_id).count() == len(served)
    assert not SyncRun.objects.filter(mapping__sabito_business_id="biz-paused").exists()


@pytest.mark.e2e
def test_two_simultaneous_triggers_produce_one_run_and_one_already_running(
    celery_worker_thread, sabito_simulator, settings
):
    settings.SABITO_PAGE_SIZE = "10"
    sabito_simulator.set_faults({"slow_seconds": 0.3})
    mapping, _ = simulator_mappings(sabito_simulator)

    sync_mapping_task.apply_async(args=[str(mapping.pk), True, "api"])
    sync_mapping_task.apply_async(args=[str(mapping.pk), True, "admin"])

    runs = wait_for(
        lambda: len(finished_runs(mapping=mapping)) == 2 and finished_runs(mapping=mapping), message="both triggers"
    )
    assert sorted(run.status for run in runs) == ["already_running", "succeeded"]
    assert Customer.objects.count() == len(sabito_simulator.customers(mapping.sabito_business_id))


@pytest.mark.e2e
def test_task_retries_after_server_errors_and_then_succeeds(celery_worker_thread, sabito_simulator, settings):
    settings.SABITO_MAX_RETRIES = "0"  # let the task-level retry do the work
    settings.SABITO_TASK_RETRY_DELAY = "1"
    sabito_simulator.set_faults({"error_rate": 1.0})
    mapping, _ = simulator_mappings(sabito_simulator)

    sync_mapping_task.apply_async(args=[str(mapping.pk), False, "beat"])
    failed = wait_for(lambda: finished_runs(mapping=mapping, status="failed"), message="the failed first attempt")
    sabito_simulator.set_faults(None)

    wait_for(lambda: finished_runs(mapping=mapping, status="succeeded"), message="the retry")
    assert "HTTP 500" in failed[0].error_message
    mapping.refresh_from_db()
    assert mapping.metadata["lastSyncResult"]["success"] is True
    assert Customer.objects.count() == len(sabito_simulator.customers(mapping.sabito_business_id))


@pytest.mark.e2e
def test_rejected_api_key_is_not_retried(celery_worker_thread, sabito_simulator, settings):
    settings.SABITO_API_KEY = "wrong-key"
    settings.SABITO_TASK_RETRY_DELAY = "0"
    mapping, _ = simulator_mappings(sabito_simulator)

    sync_mapping_task.apply_async(args=[str(mapping.pk), False, "beat"])

    wait_for(lambda: finished_runs(mapping=mapping), message="the run")
    requests_before = sabito_simulator.stats["customerRequests"]
    import time

    time.sleep(1.5)
    assert len(finished_runs(mapping=mapping)) == 1
    assert sabito_simulator.stats["customerRequests"] == requests_before == 1


@pytest.mark.django_db
def test_periodic_task_row_follows_sync_interval(settings):
    settings.SABITO_SYNC_INTERVAL = "*/30 * * * *"
    ensure_periodic_sync_schedule()
    settings.SABITO_SYNC_INTERVAL = "15 2 * * 1-5"

    ensure_periodic_sync_schedule()

    task = PeriodicTask.objects.get(name=PERIODIC_TASK_NAME)
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_month, crontab.month_of_year, crontab.day_of_week) == (
        "15",
        "2",
        "*",
        "*",
        "1-5",
    )
    assert task.task == "sabito_sync.sync_all_mappings" and task.enabled
    assert json.loads(task.kwargs) == {"full_sync": False, "trigger": "beat"}
    assert PeriodicTask.objects.filter(name=PERIODIC_TASK_NAME).count() == 1


@pytest.mark.django_db
def test_sync_disabled_keeps_the_row_but_disables_it(settings):
    ensure_periodic_sync_schedule()
    settings.SABITO_SYNC_ENABLED = "false"

    ensure_periodic_sync_schedule()

    assert PeriodicTask.objects.get(name=PERIODIC_TASK_NAME).enabled is False


@pytest.mark.django_db
def test_schedule_update_never_touches_other_periodic_tasks():
    from django_celery_beat.models import IntervalSchedule

    every_minute = IntervalSchedule.objects.create(every=1, period="minutes")
    other = PeriodicTask.objects.create(name="someone else's job", task="other.task", interval=every_minute)

    ensure_periodic_sync_schedule()

    other.refresh_from_db()
    assert (other.task, other.enabled, other.interval_id) == ("other.task", True, every_minute.pk)


@pytest.mark.django_db
def test_migrate_creates_the_periodic_task_row():
    # pytest-django ran migrate for this database; post_migrate created the row.
    from django.core.management import call_command

    PeriodicTask.objects.filter(name=PERIODIC_TASK_NAME).delete()
    call_command("migrate", verbosity=0)

    assert PeriodicTask.objects.filter(name=PERIODIC_TASK_NAME, task="sabito_sync.sync_all_mappings").exists()


@pytest.mark.e2e
def test_startup_sync_runs_once_per_stack_start_not_per_worker(celery_worker_thread, sabito_simulator):
    mappings = simulator_mappings(sabito_simulator)
    # The worker (two threads) is up and has started nothing by itself.
    import time

    time.sleep(1)
    assert not SyncRun.objects.exists()

    on_beat_start()

    wait_for(lambda: len(finished_runs(trigger="startup")) == len(mappings), message="start-up runs")
    time.sleep(1)
    assert SyncRun.objects.filter(trigger="startup").count() == len(mappings)
    assert {run.status for run in finished_runs(trigger="startup")} == {"succeeded"}


@pytest.mark.django_db
def test_startup_sync_is_skipped_when_disabled(settings):
    settings.SABITO_SYNC_ON_STARTUP = "false"
    from sabito_sync.services.schedule import queue_startup_sync

    assert queue_startup_sync() is None


@pytest.mark.django_db
def test_task_for_a_deleted_mapping_reports_it_without_failing():
    result = sync_mapping_task.apply(args=["00000000-0000-0000-0000-000000000000"]).get()

    assert result == {"success": False, "error": "No Sabito mapping with id 00000000-0000-0000-0000-000000000000"}
    assert not SabitoMapping.objects.exists()


@pytest.mark.django_db
def test_a_stale_run_does_not_count_as_running(settings):
    from datetime import timedelta

    from django.utils import timezone

    from sabito_sync.runs.queries import is_sync_running

    settings.SABITO_STALE_RUN_AFTER = "60"
    mapping = SabitoMappingFactory()
    run = SyncRun.objects.create(
        mapping=mapping, trigger="beat", started_at=timezone.now(), heartbeat_at=timezone.now()
    )
    assert is_sync_running(mapping=mapping)

    SyncRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))

    assert not is_sync_running(mapping=mapping)
