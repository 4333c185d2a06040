"""Probes: `/healthz` (the process answers), `/readyz` (database, migrations, broker and
beat, as JSON, 200 or 503) and, through `ProbeMiddleware`, `/metrics`; answered before
any other middleware, since probes address a container by IP over plain HTTP. Also
beat's scheduler, which records that beat is alive."""

from __future__ import annotations

import logging
import socket
import time
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connection
from django.http import HttpResponseNotAllowed, JsonResponse
from django.utils import timezone
from django_celery_beat.schedulers import DatabaseScheduler

from ..logs import LOG_PREFIX
from ..models import SchedulerHeartbeat
from .metrics import holds_metrics_token

logger = logging.getLogger("sabito_sync.health")

BEAT_HEARTBEAT_NAME = "beat"
BROKER_CONNECT_TIMEOUT = 3  # whole seconds (kombu types it int); a probe's own timeout is typically a few more

_migrations_applied = False  # once true in a process it stays true: nothing unapplies them


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    """The status for anyone; each check's verdict only for the holder of the metrics
    token: a failure's details name hosts, ports and database roles. They are logged."""
    checks = readiness_checks()
    ready = all(check["ok"] for check in checks.values())
    if not ready:
        failures = "; ".join(f"{name}: {check['error']}" for name, check in checks.items() if not check["ok"])
        logger.warning("%s Not ready: %s", LOG_PREFIX, failures)
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable"}
    if holds_metrics_token(request):
        body["checks"] = checks
    return JsonResponse(body, status=200 if ready else 503)


def readiness_checks(*, only: list[str] | None = None) -> dict[str, dict]:
    """Each check's verdict: all of them, or `only` those named (plus the database,
    which the migrations and beat checks need)."""
    wanted = set(only or ("database", "migrations", "broker", "beat"))
    checks = {"database": verdict(database_problem())}
    if "migrations" in wanted and checks["database"]["ok"]:
        checks["migrations"] = verdict(migrations_problem())
    if "broker" in wanted:
        checks["broker"] = verdict(broker_problem())
    if "beat" in wanted and checks["database"]["ok"]:
        checks["beat"] = verdict(beat_problem())
    return checks


def verdict(problem: str | None) -> dict:
    return {"ok": True} if problem is None else {"ok": False, "error": problem}


def database_problem() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        connection.close()  # a broken connection must not be kept for the next request
        return f"the database does not answer: {exc}"
    return None


def migrations_problem() -> str | None:
    global _migrations_applied
    if _migrations_applied:
        return None
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _backwards in pending[:5])
        return f"{len(pending)} migrations not applied ({names}); run manage.py migrate"
    _migrations_applied = True
    return None


def broker_problem() -> str | None:
    # The host project's Celery app (the current one), whatever its module is called.
    from celery import current_app as app

    try:
        with app.connection_for_write(connect_timeout=BROKER_CONNECT_TIMEOUT) as broker:
            broker.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_CONNECT_TIMEOUT)
    except Exception as exc:  # kombu raises the transport's own errors
        return f"the broker does not accept a connection: {exc.__class__.__name__}: {exc}"
    return None


def beat_problem() -> str | None:
    heartbeat = SchedulerHeartbeat.objects.filter(name=BEAT_HEARTBEAT_NAME).first()
    if heartbeat is None:
        return "beat has never run against this database (start exactly one celery beat)"
    silent = timezone.now() - heartbeat.seen_at
    if silent > timedelta(seconds=2 * heartbeat.tick_seconds):
        return (
            f"beat was last seen {silent.total_seconds():.0f} s ago on {heartbeat.hostname or 'an unknown host'}, "
            f"more than twice its {heartbeat.tick_seconds:g} s loop"
        )
    return None


class ProbeMiddleware:
    def __init__(self, get_response):
        from .metrics import metrics

        self.get_response = get_response
        self.probes = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}

    def __call__(self, request):
        probe = self.probes.get(request.path_info)
        if probe is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        return probe(request)


class HeartbeatScheduler(DatabaseScheduler):
    """django-celery-beat's scheduler, recording after each round of beat's loop that
    it is alive, and the longest it sleeps between two rounds (`max_interval`)."""

    heartbeat_every = 1.0  # seconds: a round can be much shorter than max_interval

    def tick(self, *args, **kwargs):
        delay = super().tick(*args, **kwargs)
        now = time.monotonic()
        if now - getattr(self, "_heartbeat_written", float("-inf")) >= self.heartbeat_every:
            self._heartbeat_written = now
            record_beat_heartbeat(tick_seconds=float(self.max_interval))
        return delay


def record_beat_heartbeat(*, tick_seconds: float) -> None:
    try:
        SchedulerHeartbeat.objects.update_or_create(
            name=BEAT_HEARTBEAT_NAME,
            defaults={"seen_at": timezone.now(), "tick_seconds": tick_seconds, "hostname": socket.gethostname()},
        )
    except DatabaseError as exc:
        # Beat goes on scheduling; /readyz will say it has not been seen.
        logger.warning("%s Could not record beat's heartbeat: %s", LOG_PREFIX, exc)
        connection.close()
