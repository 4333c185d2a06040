"""The outgoing alert webhook: a signed JSON POST when a mapping has failed
SABITO_SYNC_ALERT_AFTER_FAILURES times in a row, and when it recovers.

After each run (`sync_finished`, see `receivers`) it counts the failures from the
recorded runs (so the count is right whichever worker ran which run), then queues
the `send_alert_webhook` task once the transaction commits. The sync never waits for the receiver: the POST is a
Celery task with retries, and a broker that cannot take the task costs a log line.
The body carries ids, names and the run's error message, never the API key (it is
scrubbed again here) nor error details (they hold customers' emails).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from datetime import datetime
from typing import Any

import requests
from django.db import transaction
from django.utils import timezone

from ..conf import load_sabito_settings
from ..logs import LOG_PREFIX
from ..models import SabitoMapping, SyncRun
from ..runs.result import SyncResult
from . import queueing

logger = logging.getLogger("sabito_sync.alerts")

SIGNATURE_HEADER = "X-Sabito-Sync-Signature"
FAILING, RECOVERED = "sabito_sync.mapping_failing", "sabito_sync.mapping_recovered"
WEBHOOK_TIMEOUT = (5, 10)  # seconds to connect, to answer


class WebhookNotAccepted(Exception):
    """The receiver answered, but not with a 2xx: worth trying again later."""


def sign(body: bytes, *, secret: str) -> str:
    """The signature header's value: `sha256=<hex HMAC-SHA256 of the exact body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def failures_in_a_row(*, mapping_id: uuid.UUID, before: datetime | None = None) -> int:
    """Failed runs of the mapping since its latest success (both started before
    `before`, when given). Refused triggers (already running) neither count nor break it."""
    runs = SyncRun.objects.filter(mapping_id=mapping_id)
    if before is not None:
        runs = runs.filter(started_at__lt=before)
    last_success = (
        runs.filter(status=SyncRun.Status.SUCCEEDED)
        .order_by("-started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    failed = runs.filter(status=SyncRun.Status.FAILED)
    if last_success is not None:
        failed = failed.filter(started_at__gt=last_success)
    return failed.count()


def alert_for(*, mapping: SabitoMapping, result: SyncResult, threshold: int) -> dict[str, Any] | None:
    """The alert this run's outcome calls for, or None."""
    # Refused, cancelled on request or interrupted by a shutdown: no news about Sabito.
    if result.already_running or result.stopped or not result.run_id:
        return None
    run = SyncRun.objects.filter(pk=result.run_id).only("started_at", "finished_at").first()
    if run is None:
        return None
    if result.success:
        before = failures_in_a_row(mapping_id=mapping.pk, before=run.started_at)
        if before < threshold:
            return None
        event, failures = RECOVERED, before
    else:
        failures = failures_in_a_row(mapping_id=mapping.pk)
        if failures < threshold:
            return None
        event = FAILING
    return {
        "event": event,
        "mappingId": str(mapping.pk),
        "businessId": mapping.sabito_business_id,
        "businessName": mapping.business_name,
        "tenantId": str(mapping.tenant_id),
        "runId": str(run.pk),
        "consecutiveFailures": failures,
        "error": None if result.success else result.error,
        "finishedAt": (run.finished_at or timezone.now()).isoformat(),
    }


def alert_after_run(*, mapping: SabitoMapping, result: SyncResult) -> None:
    """Queue the alert this finished run calls for, if any, once its transaction commits."""
    settings = load_sabito_settings()
    if not settings.webhook_url:
        return
    payload = alert_for(mapping=mapping, result=result, threshold=settings.alert_after_failures)
    if payload is None:
        return
    transaction.on_commit(lambda: queue_alert(payload))


def queue_alert(payload: dict[str, Any]) -> None:
    try:
        queueing.queue_alert(payload)
    except Exception as exc:  # the broker is down: the sync goes on, the log says what was lost
        logger.error(
            "%s Could not queue the %s alert for mapping %s: %s",
            LOG_PREFIX,
            payload["event"],
            payload["mappingId"],
            exc,
        )


def post_alert(payload: dict[str, Any]) -> int:
    """POST one alert, signed with the current secret; returns the receiver's status.
    A 4xx other than 408/429 is the receiver refusing this alert: not retried; a 5xx,
    408 or 429 raises `WebhookNotAccepted`, for the task to try again later."""
    settings = load_sabito_settings()
    if not settings.webhook_url:
        return 0
    body = json.dumps(payload, sort_keys=True).encode()
    if settings.api_key:
        body = body.replace(settings.api_key.encode(), b"[redacted]")
    response = requests.post(
        settings.webhook_url,
        data=body,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret=settings.webhook_secret)},
        timeout=WEBHOOK_TIMEOUT,
        allow_redirects=False,
    )
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise WebhookNotAccepted(f"the webhook answered HTTP {response.status_code}")
    if response.status_code >= 300:
        logger.error(
            "%s The alert webhook refused the %s alert for mapping %s (HTTP %d)",
            LOG_PREFIX,
            payload["event"],
            payload["mappingId"],
            response.status_code,
        )
    else:
        logger.info("%s Alert %s sent for mapping %s", LOG_PREFIX, payload["event"], payload["mappingId"])
    return response.status_code
