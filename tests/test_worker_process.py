"""A real `celery worker` process, killed with SIGKILL in the middle of a sync."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db.models import Count
from django.utils import timezone

from sabito_sync.engine.sync import sync_mapping
from sabito_sync.models import Customer, SyncRun
from sabito_sync.tasks import sync_mapping_task

from .conftest import beat_process, subprocess_env, wait_for
from .factories import SabitoMappingFactory

ROOT = Path(__file__).resolve().parent.parent
OLD_WATERMARK = "2020-01-01T00:00:00.000Z"


@pytest.fixture
def worker_process(transactional_db, sabito_simulator, settings, tmp_path):
    settings.SABITO_PAGE_SIZE = "5"
    log = open(tmp_path / "worker.log", "w+")  # noqa: SIM115 (the worker writes it until it stops)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "nexpro",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "-n",
            "kill-test@%h",
        ],
        cwd=ROOT,
        env=subprocess_env(SABITO_SYNC_ON_STARTUP="false"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    log.seek(0)
    print(log.read())


@pytest.mark.e2e
def test_worker_killed_mid_sync_loses_nothing(worker_process, sabito_simulator):
    # 12+ pages of half a second each: ample time to kill the worker mid-run.
    sabito_simulator.set_faults({"slow_seconds": 0.5})
    business_id = sabito_simulator.business_ids[0]
    mapping = SabitoMappingFactory(sabito_business_id=business_id, metadata={"lastSyncedAt": OLD_WATERMARK})

    sync_mapping_task.apply_async(args=[str(mapping.pk), False, "beat"])
    run = wait_for(
        lambda: SyncRun.objects.filter(mapping=mapping, status="running", customers_processed__gte=5).first(),
        timeout=60,
        message="the worker to write its first page",
    )
    os.killpg(worker_process.pid, signal.SIGKILL)
    worker_process.wait(timeout=10)

    run.refresh_from_db()
    mapping.refresh_from_db()
    assert run.status == "running"  # nobody was left to finish it
    assert mapping.metadata["lastSyncedAt"] == OLD_WATERMARK
    written_before_the_kill = Customer.objects.count()
    assert 0 < written_before_the_kill < len(sabito_simulator.customers(business_id))

    # Later: the dead run's heartbeat has gone stale, and the next sync takes over.
    SyncRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    sabito_simulator.set_faults(None)
    result = sync_mapping(mapping=mapping)

    assert result.success
    run.refresh_from_db()
    assert run.status == "failed" and "no progress since" in run.error_message
    served = {record["id"] for record in sabito_simulator.customers(business_id)}
    stored = set(Customer.objects.values_list("sabito_customer_id", flat=True))
    assert stored == served
    assert not Customer.objects.values("sabito_customer_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    mapping.refresh_from_db()
    assert mapping.metadata["lastSyncedAt"] != OLD_WATERMARK


@pytest.mark.e2e
def test_real_beat_start_applies_the_interval_and_queues_one_startup_sync(
    celery_worker_thread, sabito_simulator, tmp_path
):
    from django_celery_beat.models import PeriodicTask

    from sabito_sync.services.schedule import PERIODIC_TASK_NAME

    mappings = [
        SabitoMappingFactory(sabito_business_id=business_id, business_name=name)
        for business_id, name in sabito_simulator.business_names.items()
    ]
    with beat_process(tmp_path, SABITO_SYNC_INTERVAL="*/30 * * * *", SABITO_SYNC_ENABLED="true") as log_path:
        wait_for(
            lambda: SyncRun.objects.filter(trigger="startup").exclude(status="running").count() == len(mappings),
            timeout=60,
            message="the start-up sync of every mapping",
        )
        import time

        time.sleep(2)  # nothing more arrives: once per start, not once per worker thread
        assert SyncRun.objects.filter(trigger="startup").count() == len(mappings)
        task = PeriodicTask.objects.get(name=PERIODIC_TASK_NAME)
        assert (task.crontab.minute, task.crontab.hour, task.enabled) == ("*/30", "*", True)
    output = log_path.read_text()
    assert "[Sabito Sync] Scheduler started: periodic sync on" in output
    for mapping in mappings:
        served = {record["id"] for record in sabito_simulator.customers(mapping.sabito_business_id)}
        assert (
            set(
                Customer.objects.filter(sabito_business_id=mapping.sabito_business_id).values_list(
                    "sabito_customer_id", flat=True
                )
            )
            == served
        )


def start_worker(tmp_path, name: str, *, pool: str = "solo", **env) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (the worker writes it until it stops)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "nexpro",
            "worker",
            "--pool",
            pool,
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
            "-n",
            f"{name}-{os.getpid()}@%h",
        ],
        cwd=ROOT,
        env=subprocess_env(SABITO_SYNC_ON_STARTUP="false", **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def exact(mapping, simulator) -> bool:
    served = {record["id"] for record in simulator.customers(mapping.sabito_business_id)}
    stored = Customer.objects.filter(tenant=mapping.tenant).values_list("sabito_customer_id", flat=True)
    return set(stored) == served and len(stored) == len(served)


@pytest.mark.e2e
def test_a_worker_killed_mid_sync_heals_with_nobody_involved(transactional_db, sabito_simulator, settings, tmp_path):
    """Default heartbeat and stale settings, the reaper on a real beat, a second
    worker: after SIGKILL the tenant is exact within three minutes, untouched."""
    settings.SABITO_PAGE_SIZE = "5"
    sabito_simulator.set_faults({"slow_seconds": 0.5})
    mapping = SabitoMappingFactory(sabito_business_id=sabito_simulator.business_ids[0])
    first = start_worker(tmp_path, "doomed")
    second = None
    try:
        with beat_process(tmp_path, SABITO_SYNC_ON_STARTUP="false"):
            sync_mapping_task.apply_async(args=[str(mapping.pk), True, "api"])
            wait_for(
                lambda: SyncRun.objects.filter(mapping=mapping, status="running", pages_done__gte=1).exists(),
                timeout=60,
                message="the first worker to write a page",
            )
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
            assert not exact(mapping, sabito_simulator)
            sabito_simulator.set_faults(None)
            second = start_worker(tmp_path, "survivor")

            wait_for(
                lambda: exact(mapping, sabito_simulator), timeout=180, interval=1, message="the tenant to be exact"
            )
    finally:
        stop(first)
        if second is not None:
            stop(second)

    dead, recovered = SyncRun.objects.filter(mapping=mapping).order_by("started_at")[:2]
    assert dead.status == "failed" and "its worker died" in dead.error_message
    assert recovered.trigger == "recovery" and recovered.note.startswith(f"Resumed from run {dead.pk}")


def tell_to_stop(process: subprocess.Popen, how: str) -> None:
    if how == "SIGTERM to the main process":  # `docker compose stop`, Kubernetes
        os.kill(process.pid, signal.SIGTERM)
    elif how == "SIGTERM to the process group":  # honcho (`scripts/run`), an init that forwards
        os.killpg(process.pid, signal.SIGTERM)
    else:  # Ctrl-C in the terminal the worker runs in
        os.killpg(process.pid, signal.SIGINT)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "how", ["SIGTERM to the main process", "SIGTERM to the process group", "SIGINT to the process group"]
)
def test_a_worker_told_to_stop_interrupts_its_sync_and_the_next_worker_resumes_it(
    transactional_db, sabito_simulator, settings, tmp_path, how
):
    settings.SABITO_PAGE_SIZE = "5"
    sabito_simulator.set_faults({"slow_seconds": 0.5})
    mapping = SabitoMappingFactory(sabito_business_id=sabito_simulator.business_ids[0])
    first = start_worker(tmp_path, "stopping", pool="prefork")
    second = None
    try:
        with beat_process(tmp_path, SABITO_SYNC_ON_STARTUP="false"):  # its reaper queues the interrupted sync again
            sync_mapping_task.apply_async(args=[str(mapping.pk), True, "api"])
            wait_for(
                lambda: SyncRun.objects.filter(mapping=mapping, status="running", pages_done__gte=1).exists(),
                timeout=60,
                message="the worker to write a page",
            )
            asked_at = time.monotonic()
            tell_to_stop(first, how)
            exit_code = first.wait(timeout=60)
            took = time.monotonic() - asked_at

            run = SyncRun.objects.get(mapping=mapping)
            assert run.status == "interrupted" and run.stop_reason == "shutdown" and run.checkpoint["offset"] >= 5
            # Celery's own exit codes: 0 after SIGTERM, 1 after Ctrl-C; never killed by a signal.
            assert exit_code == (1 if how.startswith("SIGINT") else 0)
            # Within honcho's 5 s and compose's grace: no SIGKILL needed.
            assert took < 15, f"the worker took {took:.1f} s to stop"
            log = (tmp_path / "stopping.log").read_text()
            # An orderly stop: no traceback, no pool process lost or killed by the signal.
            for sign_of_trouble in ("Traceback", "WorkerLostError", "exited with", "ERROR"):
                assert sign_of_trouble not in log, log
            sabito_simulator.set_faults(None)
            second = start_worker(tmp_path, "next")
            wait_for(
                lambda: exact(mapping, sabito_simulator), timeout=150, interval=1, message="the tenant to be exact"
            )
    finally:
        stop(first)
        if second is not None:
            stop(second)

    resumed = SyncRun.objects.filter(mapping=mapping, trigger="recovery").get()
    assert resumed.status == "succeeded" and resumed.note.startswith(f"Resumed from run {run.pk} (interrupted)")
