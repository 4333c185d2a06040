"""A worker's broker going away: Redis of the test's own, killed while a sync runs."""

import logging
import socket
import subprocess
import time
from contextlib import contextmanager

import pytest
from kombu import Connection, Consumer, Queue

from sabito_sync.models import SyncRun
from sabito_sync.tasks import sync_mapping_task

from .conftest import wait_for
from .factories import SabitoMappingFactory
from .test_worker_process import start_worker, stop


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def redis_server(port: int, folder):
    """A Redis of this test's own (its own port and folder): killing it harms nobody."""
    process = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _answers(port), timeout=30, message=f"Redis on port {port}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def send(url: str, *args) -> None:
    with Connection(url) as connection, connection.Producer() as producer:
        sync_mapping_task.apply_async(args=list(args), producer=producer)


@pytest.mark.parametrize("transport", ["kombu's own", "the project's"])
def test_acknowledging_on_a_channel_whose_connection_is_gone_is_a_lost_connection_not_a_crash(
    tmp_path, transport, caplog
):
    """A task that ends after its worker lost Redis is acknowledged on the channel it
    came from, whose connection the worker closed meanwhile (the transport's client
    cleared) and whose connection pools are dropped (as closing the channel, or a
    fork, drops them). kombu's channel then fails with the AttributeError that
    stopped the worker; ours raises a connection error, which the worker logs and
    survives (the task comes again after the visibility timeout, and does nothing)."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    options = {} if transport == "kombu's own" else {"transport": "nexpro.broker:RedisTransport"}
    with redis_server(port, tmp_path):
        with Connection(url, **options) as connection:
            channel = connection.default_channel
            Queue("outage-test")(channel).declare()
            channel.basic_publish(channel.prepare_message("a task"), exchange="", routing_key="outage-test")
        connection = Connection(url, **options)
        channel = connection.channel()
        received = []
        Consumer(channel, [Queue("outage-test")], callbacks=[lambda body, message: received.append(message)]).consume()
        connection.drain_events(timeout=10)
        errors = connection.connection_errors
        connection.close()
        channel._disconnect_pools()

        if transport == "kombu's own":
            with pytest.raises(AttributeError, match="'NoneType' object has no attribute"):
                received[0].ack_log_error(logging.getLogger("test"), errors)
        else:
            with caplog.at_level(logging.CRITICAL):
                received[0].ack_log_error(logging.getLogger("test"), errors)  # logs, does not raise
            assert "Couldn't ack" in caplog.text and "connection is closed" in caplog.text


@pytest.mark.e2e
def test_a_worker_outlives_its_broker_going_away_during_a_sync(transactional_db, sabito_simulator, settings, tmp_path):
    settings.SABITO_PAGE_SIZE = "5"
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    first, second = (
        SabitoMappingFactory(sabito_business_id=business_id) for business_id in sabito_simulator.business_ids[:2]
    )
    sabito_simulator.set_faults({"slow_seconds": 0.4})  # 12 pages: about 5 s
    with redis_server(port, tmp_path) as broker:
        worker = start_worker(tmp_path, "outage", pool="prefork", CELERY_BROKER_URL=url)
        try:
            send(url, str(first.pk), True, "api")
            wait_for(
                lambda: SyncRun.objects.filter(mapping=first, status="running", pages_done__gte=1).exists(),
                timeout=60,
                message="the worker to write a page",
            )
            broker.kill()
            broker.wait(timeout=10)
            time.sleep(1)
            with redis_server(port, tmp_path):  # back, empty, while the sync still runs
                wait_for(
                    lambda: SyncRun.objects.filter(mapping=first, status="succeeded").exists(),
                    timeout=120,
                    message="the sync to end",
                )
                send(url, str(second.pk), True, "api")
                wait_for(
                    lambda: SyncRun.objects.filter(mapping=second, status="succeeded").exists(),
                    timeout=120,
                    message="the worker to take the next task",
                )
                assert worker.poll() is None
        finally:
            stop(worker)
    log = (tmp_path / "outage.log").read_text()
    assert "Unrecoverable error" not in log
    assert log.count("Connected to nexpro.broker:RedisTransport://") >= 2  # it reconnected
