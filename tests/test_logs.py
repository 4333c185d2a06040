"""Logs an operator can ship: LOG_FORMAT=json prints one JSON object per line, and the
worker prints the fan-out's summary once, when the last mapping of a tick finishes."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from sabito_sync.logcontext import SyncContextFilter
from sabito_sync.models import SyncRun, SyncTick, SyncTickMapping
from sabito_sync.runs.ticks import mapping_finished, start_tick
from sabito_sync.tasks import sync_all_mappings_task, sync_mapping_task

from .conftest import subprocess_env, wait_for
from .factories import SabitoMappingFactory, TenantFactory
from .test_tasks import simulator_mappings

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = "[Sabito Sync] All tenants sync completed:"


@pytest.mark.e2e
def test_json_log_lines_carry_level_logger_timestamp_and_the_sync_ids(transactional_db, sabito_simulator):
    mapping, _ = simulator_mappings(sabito_simulator)

    completed = subprocess.run(
        [sys.executable, "manage.py", "sabito_sync", "--mapping", str(mapping.pk), "--full"],
        cwd=ROOT,
        env=subprocess_env(LOG_FORMAT="json", SABITO_PAGE_SIZE="25"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    # The command's own progress lines share stderr; every other line is one JSON object.
    lines = [json.loads(line) for line in completed.stderr.splitlines() if "processed so far" not in line]
    sync_lines = [line for line in lines if line["logger"] == "sabito_sync.sync"]
    run = SyncRun.objects.get(mapping=mapping)
    assert [line["message"].split(":")[0] for line in sync_lines] == [
        "[Sabito Sync] Starting sync for business",
        "[Sabito Sync] Found 60 customers to sync",
        "[Sabito Sync] Sync completed for " + mapping.business_name,
    ]
    for line in sync_lines:
        assert line["level"] == "INFO"
        assert line["timestamp"].startswith(str(run.started_at.year))
        assert (line["mapping_id"], line["business_id"], line["tenant_id"], line["run_id"]) == (
            str(mapping.pk),
            mapping.sabito_business_id,
            str(mapping.tenant_id),
            str(run.pk),
        )


@pytest.mark.project
def test_a_name_from_outside_cannot_forge_a_plain_log_line_or_drive_the_terminal(transactional_db, sabito_simulator):
    mapping, _ = simulator_mappings(sabito_simulator)
    # Stored before names were checked (or written past the API and the admin).
    hostile = "Acme\n2026-12-07 10:00:00,000 ERROR sabito_sync.sync [Sabito Sync] Sync failed for Bank\x1b[2J"
    type(mapping).objects.filter(pk=mapping.pk).update(business_name=hostile)

    completed = subprocess.run(
        [sys.executable, "manage.py", "sabito_sync", "--mapping", str(mapping.pk), "--full"],
        cwd=ROOT,
        env=subprocess_env(LOG_FORMAT="plain"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    lines = completed.stderr.splitlines()
    # "<date> <time> <LEVEL> <logger> <message>": no line of level ERROR was written,
    # by the log or by the command's own progress lines.
    assert {line.split(" ")[2] for line in lines if line[:2] == "20"} == {"INFO"}
    assert "\x1b" not in completed.stderr
    (completed_line,) = [line for line in lines if "Sync completed for" in line]
    assert "Sync completed for Acme\\n2026-12-07 10:00:00,000 ERROR" in completed_line
    assert completed_line.count("\\x1b[2J") == 1


def test_lines_outside_a_sync_carry_no_sync_ids(caplog, db):
    with caplog.at_level(logging.INFO, logger="sabito_sync"):
        start_tick(expected=0, full_sync=False, trigger="beat")

    (record,) = [record for record in caplog.records if SUMMARY in record.getMessage()]
    assert not hasattr(record, "mapping_id")


@pytest.mark.e2e
def test_worker_logs_the_tick_summary_once_when_the_last_mapping_finishes(
    celery_worker_thread, sabito_simulator, caplog
):
    first, _second = simulator_mappings(sabito_simulator)
    SabitoMappingFactory(tenant=first.tenant, sabito_business_id="biz-gone-from-sabito")  # Sabito answers 404: fails

    with caplog.at_level(logging.INFO, logger="sabito_sync"):
        sync_all_mappings_task.apply_async(kwargs={"full_sync": False, "trigger": "startup"})
        tick = wait_for(
            lambda: SyncTick.objects.filter(completed_at__isnull=False).first(), message="the tick to complete"
        )

    runs = SyncRun.objects.filter(trigger="startup")
    assert (tick.expected, tick.finished, runs.count()) == (3, 3, 3)
    assert sorted(runs.values_list("status", flat=True)) == ["failed", "succeeded", "succeeded"]
    summaries = [record.getMessage() for record in caplog.records if SUMMARY in record.getMessage()]
    created = sum(run.created for run in runs)
    assert created == 120
    assert summaries == [f"{SUMMARY} {{ totalTenants: 3, totalCreated: {created}, totalUpdated: 0, totalErrors: 1 }}"]


def test_a_mapping_counted_twice_for_one_tick_counts_once(db):
    mappings = SabitoMappingFactory.create_batch(2, tenant=TenantFactory())
    tick_id = start_tick(expected=2, full_sync=False, trigger="beat")
    result = {"success": True, "created": 3, "updated": 1, "errors": 0}

    assert mapping_finished(tick_id=tick_id, mapping_id=str(mappings[0].pk), result=result) is False
    assert mapping_finished(tick_id=tick_id, mapping_id=str(mappings[0].pk), result=result) is False  # redelivered
    assert (
        mapping_finished(tick_id=tick_id, mapping_id=str(mappings[1].pk), result={"success": False, "error": "x"})
        is True
    )
    assert mapping_finished(tick_id=tick_id, mapping_id=str(mappings[1].pk), result=None) is False

    tick = SyncTick.objects.get(pk=tick_id)
    assert (tick.finished, tick.created, tick.updated, tick.errors) == (2, 3, 1, 1)
    assert SyncTickMapping.objects.filter(tick=tick).count() == 2


class ContextRecords(logging.Handler):
    """The records of the sabito_sync loggers, with the sync's ids as the console
    handler's filter sets them."""

    def __init__(self):
        super().__init__()
        self.records = []
        self.addFilter(SyncContextFilter())

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        logging.getLogger("sabito_sync").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("sabito_sync").removeHandler(self)


def test_the_tasks_retry_line_carries_the_sync_ids(db, fake_sabito, settings):
    settings.SABITO_TASK_MAX_RETRIES = "1"
    settings.SABITO_TASK_RETRY_DELAY = "0"
    mapping = SabitoMappingFactory()
    fake_sabito.answer_next(500, times=20)

    with ContextRecords() as handler:
        sync_mapping_task.apply(args=[str(mapping.pk), False, "beat"])

    (retry,) = [record for record in handler.records if "Retrying" in record.getMessage()]
    first_run = SyncRun.objects.filter(mapping=mapping).earliest("started_at")
    assert (retry.mapping_id, retry.business_id, retry.tenant_id, retry.run_id) == (
        str(mapping.pk),
        mapping.sabito_business_id,
        str(mapping.tenant_id),
        str(first_run.pk),
    )


def test_a_missing_mappings_line_carries_its_id(db):
    with ContextRecords() as handler:
        sync_mapping_task.apply(args=["6d1f0c1e-0000-4000-8000-000000000000"])

    (line,) = [record for record in handler.records if "no longer exists" in record.getMessage()]
    assert (line.mapping_id, line.run_id) == ("6d1f0c1e-0000-4000-8000-000000000000", None)
