"""The periodic sync row: created from the settings, then the operator's in the admin
until SABITO_SYNC_INTERVAL or SABITO_SYNC_ENABLED changes."""

from unittest.mock import patch

import pytest
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from sabito_sync.models import AppliedSchedule
from sabito_sync.receivers import on_beat_start
from sabito_sync.services.schedule import PERIODIC_TASK_NAME, ensure_periodic_sync_schedule

from .conftest import beat_process, wait_for


def run_migrate():
    call_command("migrate", verbosity=0)


# The two moments the app looks at the row again: after `migrate`, and when beat starts.
REAPPLIERS = [pytest.param(run_migrate, id="migrate"), pytest.param(ensure_periodic_sync_schedule, id="beat-start")]


@pytest.fixture
def schedule_row(db, settings):
    settings.SABITO_SYNC_INTERVAL = "0 */6 * * *"
    settings.SABITO_SYNC_ENABLED = "true"
    ensure_periodic_sync_schedule()
    return PeriodicTask.objects.get(name=PERIODIC_TASK_NAME)


def cron_of(task):
    c = task.crontab
    return " ".join([c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week])


def pause_in_admin(task):
    task.enabled = False
    task.save()


@pytest.mark.parametrize("reapply", REAPPLIERS)
def test_pause_made_in_the_admin_survives(schedule_row, reapply):
    pause_in_admin(schedule_row)

    reapply()

    assert PeriodicTask.objects.get(name=PERIODIC_TASK_NAME).enabled is False


@pytest.mark.parametrize("reapply", REAPPLIERS)
def test_crontab_edited_in_the_admin_survives(schedule_row, reapply):
    nightly = CrontabSchedule.objects.create(minute="45", hour="3", timezone="UTC")
    schedule_row.crontab = nightly
    schedule_row.save()

    reapply()

    assert PeriodicTask.objects.get(name=PERIODIC_TASK_NAME).crontab_id == nightly.pk


def test_interval_change_applies_the_new_cron_and_deletes_the_unused_old_crontab(schedule_row, settings):
    old_crontab_id = schedule_row.crontab_id
    settings.SABITO_SYNC_INTERVAL = "*/30 * * * *"

    ensure_periodic_sync_schedule()

    assert cron_of(PeriodicTask.objects.get(name=PERIODIC_TASK_NAME)) == "*/30 * * * *"
    assert not CrontabSchedule.objects.filter(pk=old_crontab_id).exists()


def test_interval_change_keeps_the_old_crontab_when_another_task_uses_it(schedule_row, settings):
    other = PeriodicTask.objects.create(name="someone else's job", task="other.task", crontab=schedule_row.crontab)
    settings.SABITO_SYNC_INTERVAL = "*/30 * * * *"

    ensure_periodic_sync_schedule()

    other.refresh_from_db()
    assert cron_of(other) == "0 */6 * * *"
    assert cron_of(PeriodicTask.objects.get(name=PERIODIC_TASK_NAME)) == "*/30 * * * *"


def test_interval_change_keeps_a_pause_made_in_the_admin(schedule_row, settings):
    pause_in_admin(schedule_row)
    settings.SABITO_SYNC_INTERVAL = "*/30 * * * *"

    ensure_periodic_sync_schedule()

    task = PeriodicTask.objects.get(name=PERIODIC_TASK_NAME)
    assert (cron_of(task), task.enabled) == ("*/30 * * * *", False)


def test_enabling_the_setting_again_enables_the_row(schedule_row, settings):
    settings.SABITO_SYNC_ENABLED = "false"
    ensure_periodic_sync_schedule()
    settings.SABITO_SYNC_ENABLED = "true"

    ensure_periodic_sync_schedule()

    assert PeriodicTask.objects.get(name=PERIODIC_TASK_NAME).enabled is True


def test_applied_settings_are_recorded(schedule_row, settings):
    settings.SABITO_SYNC_INTERVAL = "15 2 * * 1-5"
    settings.SABITO_SYNC_ENABLED = "false"

    ensure_periodic_sync_schedule()

    applied = AppliedSchedule.objects.get(periodic_task_name=PERIODIC_TASK_NAME)
    assert (applied.sync_interval, applied.sync_enabled) == ("15 2 * * 1-5", False)


def test_row_deleted_in_the_admin_is_recreated_from_the_settings(schedule_row, settings):
    schedule_row.delete()
    settings.SABITO_SYNC_INTERVAL = "*/30 * * * *"

    run_migrate()

    task = PeriodicTask.objects.get(name=PERIODIC_TASK_NAME)
    assert (cron_of(task), task.enabled, task.task) == ("*/30 * * * *", True, "sabito_sync.sync_all_mappings")


def test_row_from_before_settings_were_recorded_keeps_its_pause(schedule_row):
    # A deployment upgrading to this version: the row exists, nothing recorded yet.
    AppliedSchedule.objects.all().delete()
    pause_in_admin(schedule_row)

    ensure_periodic_sync_schedule()

    assert PeriodicTask.objects.get(name=PERIODIC_TASK_NAME).enabled is False
    assert AppliedSchedule.objects.filter(periodic_task_name=PERIODIC_TASK_NAME, sync_enabled=True).exists()


def test_description_says_where_the_row_came_from_and_that_admin_edits_stand(schedule_row):
    applied = AppliedSchedule.objects.get(periodic_task_name=PERIODIC_TASK_NAME)

    description = schedule_row.description

    assert "SABITO_SYNC_INTERVAL='0 */6 * * *'" in description and "SABITO_SYNC_ENABLED=true" in description
    assert f"{applied.applied_at:%Y-%m-%d %H:%M} UTC" in description
    assert "pause (untick Enabled) or an edit made here stands" in description
    assert "only a change of one of those settings rewrites" in description


def test_a_pause_made_in_the_admin_also_skips_the_start_up_sync(schedule_row, settings):
    settings.SABITO_SYNC_ON_STARTUP = "true"
    pause_in_admin(schedule_row)

    with patch("sabito_sync.tasks.sync_all_mappings_task.apply_async") as apply_async:
        on_beat_start()

    apply_async.assert_not_called()


def test_an_interval_matching_a_crontab_made_in_the_admin_reuses_it(schedule_row, settings):
    twins = [CrontabSchedule.objects.create(minute="*/30", hour="*", timezone="UTC") for _ in range(2)]
    settings.SABITO_SYNC_INTERVAL = "*/30 * * * *"

    ensure_periodic_sync_schedule()

    assert PeriodicTask.objects.get(name=PERIODIC_TASK_NAME).crontab_id == twins[0].pk


@pytest.mark.e2e
def test_pause_made_in_the_admin_survives_a_real_beat_start(transactional_db, settings, tmp_path):
    # The settings beat will read, applied here first as `migrate` would have.
    settings.SABITO_SYNC_INTERVAL = "0 */6 * * *"
    settings.SABITO_SYNC_ENABLED = "true"
    ensure_periodic_sync_schedule()
    pause_in_admin(PeriodicTask.objects.get(name=PERIODIC_TASK_NAME))
    with beat_process(
        tmp_path, SABITO_SYNC_INTERVAL="0 */6 * * *", SABITO_SYNC_ENABLED="true", SABITO_SYNC_ON_STARTUP="false"
    ) as log_path:
        wait_for(lambda: "Scheduler started" in log_path.read_text(), timeout=60, message="beat to start")
        assert PeriodicTask.objects.get(name=PERIODIC_TASK_NAME).enabled is False
    output = log_path.read_text()
    assert "[Sabito Sync] Periodic sync left as it is in the admin (disabled)" in output
    assert "[Sabito Sync] Scheduler started: periodic sync off" in output
