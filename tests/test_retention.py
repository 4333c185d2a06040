"""Deleting old runs: each mapping keeps its latest run and its latest successful run."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from sabito_sync.models import SyncRun, SyncTick
from sabito_sync.services.retention import prune_runs
from sabito_sync.services.schedule import PRUNE_PERIODIC_TASK_NAME, ensure_prune_schedule
from sabito_sync.tasks import prune_runs_task

from .factories import SabitoMappingFactory


def run(mapping, days_ago: float, status: str = "succeeded") -> SyncRun:
    started = timezone.now() - timedelta(days=days_ago)
    return SyncRun.objects.create(
        mapping=mapping,
        trigger="beat",
        status=status,
        started_at=started,
        heartbeat_at=started,
        finished_at=None if status == "running" else started + timedelta(seconds=5),
        error_details=[{"sabitoCustomerId": "c1", "email": "someone@example.com", "reason": "bad"}],
    )


@pytest.fixture
def history(db):
    keeps_a_failure_and_an_old_success = SabitoMappingFactory()
    only_old_successes = SabitoMappingFactory()
    never_succeeded = SabitoMappingFactory()
    runs = {
        "a_success": run(keeps_a_failure_and_an_old_success, 200),
        "a_failed_between": run(keeps_a_failure_and_an_old_success, 150, "failed"),
        "a_refused": run(keeps_a_failure_and_an_old_success, 140, "already_running"),
        "a_latest_failed": run(keeps_a_failure_and_an_old_success, 100, "failed"),
        "b_first": run(only_old_successes, 300),
        "b_second": run(only_old_successes, 200),
        "b_latest": run(only_old_successes, 95),
        "c_stuck_running": run(never_succeeded, 120, "running"),
        "c_failed": run(never_succeeded, 110, "failed"),
        "c_recent_failed": run(never_succeeded, 10, "failed"),
        "c_recent_success": run(never_succeeded, 1),
    }
    return runs


def remaining(history) -> set[str]:
    kept = set(SyncRun.objects.values_list("pk", flat=True))
    return {name for name, kept_run in history.items() if kept_run.pk in kept}


def test_prune_keeps_each_mappings_latest_run_and_latest_success(history):
    deleted = prune_runs(older_than_days=90, batch_size=2)  # several batches

    assert deleted == 5
    assert remaining(history) == {
        "a_success",
        "a_latest_failed",
        "b_latest",
        "c_stuck_running",
        "c_recent_failed",
        "c_recent_success",
    }


def test_prune_command_takes_the_age_or_the_retention_setting(history, settings, capsys):
    call_command("sabito_prune_runs", "--older-than", "250")
    assert "Deleted 1 sync runs older than 250 days." in capsys.readouterr().out
    assert "b_first" not in remaining(history)

    settings.SABITO_RUN_RETENTION_DAYS = "0"
    call_command("sabito_prune_runs")
    assert "every run is kept" in capsys.readouterr().out

    settings.SABITO_RUN_RETENTION_DAYS = "120"
    call_command("sabito_prune_runs")
    assert remaining(history) == set(history) - {"b_first", "b_second", "a_failed_between", "a_refused"}


def test_daily_task_follows_the_retention_setting(history, settings):
    settings.SABITO_RUN_RETENTION_DAYS = "0"
    assert prune_runs_task.apply().get() == 0
    assert remaining(history) == set(history)

    settings.SABITO_RUN_RETENTION_DAYS = "90"
    assert prune_runs_task.apply().get() == 5


def test_prune_deletes_old_fan_out_records_too(db):
    old = SyncTick.objects.create(trigger="beat", started_at=timezone.now() - timedelta(days=100), expected=1)
    recent = SyncTick.objects.create(trigger="beat", started_at=timezone.now(), expected=1)

    prune_runs(older_than_days=90)

    assert list(SyncTick.objects.values_list("pk", flat=True)) == [recent.pk]
    assert old.pk


def test_the_daily_schedule_is_created_once_and_then_left_to_the_operator(db):
    task = ensure_prune_schedule()  # migrate already made it; a pause in the admin must stand
    task.enabled = False
    task.save()

    assert ensure_prune_schedule().enabled is False
    assert PeriodicTask.objects.filter(name=PRUNE_PERIODIC_TASK_NAME).count() == 1
    assert (task.task, f"{task.crontab.minute} {task.crontab.hour}") == ("sabito_sync.prune_runs", "17 3")
