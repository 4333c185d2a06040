"""/healthz and /readyz over real HTTP, for load balancers and Kubernetes probes."""

import json
import logging
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone

from sabito_sync.models import SchedulerHeartbeat
from sabito_sync.ops.health import BEAT_HEARTBEAT_NAME

from .conftest import beat_process, subprocess_env, wait_for

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthz_answers_for_any_host_without_touching_the_database(live_server, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = requests.get(f"{live_server.url}/healthz", headers={"Host": "10.1.2.3:8000"}, timeout=10)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_is_not_redirected_to_https_in_production(client, settings):
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz").status_code == 200
    assert client.get("/admin/login/").status_code == 301


METRICS_TOKEN = "probe-token"
WITH_TOKEN = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN


@pytest.mark.e2e
def test_readyz_is_ready_once_beat_runs(live_server, tmp_path, metrics_token):
    with beat_process(tmp_path, SABITO_SYNC_ON_STARTUP="false"):
        wait_for(
            lambda: SchedulerHeartbeat.objects.filter(name=BEAT_HEARTBEAT_NAME).exists(), message="beat's heartbeat"
        )
        response = requests.get(f"{live_server.url}/readyz", headers=WITH_TOKEN, timeout=10)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "checks": {name: {"ok": True} for name in ("database", "migrations", "broker", "beat")},
    }


def test_readyz_is_unavailable_when_beat_has_been_silent_for_twice_its_loop(live_server, metrics_token):
    SchedulerHeartbeat.objects.create(
        name=BEAT_HEARTBEAT_NAME, seen_at=timezone.now() - timedelta(seconds=11), tick_seconds=5, hostname="beat-1"
    )

    response = requests.get(f"{live_server.url}/readyz", headers=WITH_TOKEN, timeout=10)

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == checks["broker"] == {"ok": True}
    assert "beat was last seen 11 s ago on beat-1" in checks["beat"]["error"]


def test_readyz_says_beat_was_never_seen(client, db, metrics_token):
    response = client.get("/readyz", headers=WITH_TOKEN)

    assert response.status_code == 503
    assert "beat has never run" in response.json()["checks"]["beat"]["error"]


def test_readyz_tells_anyone_without_the_token_the_status_only_and_logs_why(client, db, metrics_token, caplog):
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        with caplog.at_level(logging.WARNING, logger="sabito_sync.health"):
            response = client.get("/readyz", headers=headers)

        assert response.status_code == 503
        assert response.json() == {"status": "unavailable"}
    assert "Not ready: beat: beat has never run against this database" in caplog.text


def test_readyz_gives_no_details_to_anyone_when_no_metrics_token_is_set(client, db, settings):
    settings.METRICS_TOKEN = ""

    response = client.get("/readyz", headers={"Authorization": "Bearer "})

    assert response.json() == {"status": "unavailable"}


@pytest.mark.e2e
def test_readyz_is_unavailable_with_a_dead_broker(transactional_db, tmp_path):
    SchedulerHeartbeat.objects.create(name=BEAT_HEARTBEAT_NAME, seen_at=timezone.now(), tick_seconds=600)
    port = free_port()
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with open(tmp_path / "gunicorn.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "nexpro.wsgi", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=subprocess_env(
                CELERY_BROKER_URL=dead_broker, REDIS_URL="", GUNICORN_WORKERS="1", METRICS_TOKEN=METRICS_TOKEN
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: healthz_answers(port), timeout=60, message="gunicorn")
            response = requests.get(f"http://127.0.0.1:{port}/readyz", headers=WITH_TOKEN, timeout=30)
            anonymous = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
        finally:
            server.terminate()
            server.wait(timeout=20)

    assert response.status_code == 503, (tmp_path / "gunicorn.log").read_text()[-3000:]
    checks = response.json()["checks"]
    assert checks["database"] == checks["migrations"] == checks["beat"] == {"ok": True}
    assert checks["broker"]["ok"] is False
    assert "the broker does not accept a connection" in checks["broker"]["error"]
    # Anyone else learns the status, not the broker's address; the log has the details.
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "unavailable"})
    assert "Not ready: broker: the broker does not accept a connection" in (tmp_path / "gunicorn.log").read_text()


def healthz_answers(port: int) -> bool:
    try:
        # A generous read timeout: on a busy machine a starting server may be slow to
        # answer its first request, and a timeout here is "not yet", never a failure.
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    except requests.RequestException:
        return False


def test_health_command_checks_beat_for_its_container(db, capsys):
    with pytest.raises(SystemExit) as exit_status:
        call_command("sabito_health", "--check", "beat")
    assert exit_status.value.code == 1
    assert json.loads(capsys.readouterr().out)["beat"]["ok"] is False

    SchedulerHeartbeat.objects.create(name=BEAT_HEARTBEAT_NAME, seen_at=timezone.now(), tick_seconds=5)
    call_command("sabito_health", "--check", "beat")
    assert json.loads(capsys.readouterr().out) == {"beat": {"ok": True}, "database": {"ok": True}}
