"""The host CRM's signals and the alert webhook: a signed POST, received here by a
real HTTP server, when a mapping keeps failing and when it recovers."""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sabito_sync import tasks
from sabito_sync.checks import check_sabito_settings
from sabito_sync.engine.sync import sync_mapping
from sabito_sync.models import Customer
from sabito_sync.services import alerts
from sabito_sync.signals import customers_synced, sync_finished

from .conftest import SABITO_TEST_KEY, wait_for
from .factories import CustomerFactory, SabitoMappingFactory, sabito_record
from .test_tasks import simulator_mappings

SECRET = "webhook-secret-9d1e"


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (ephemeral port) keeping every POST it gets."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/sabito"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(settings):
    with WebhookReceiver() as receiver:
        settings.SABITO_SYNC_WEBHOOK_URL = receiver.url
        settings.SABITO_SYNC_WEBHOOK_SECRET = SECRET
        yield receiver


def verified_payload(headers: dict, body: bytes) -> dict:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Sabito-Sync-Signature"], expected)
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


@pytest.mark.e2e
def test_webhook_gets_signed_alerts_when_a_mapping_fails_and_when_it_recovers(
    celery_worker_thread, sabito_simulator, webhook, settings
):
    mapping, _ = simulator_mappings(sabito_simulator)
    sabito_simulator.set_faults({"error_rate": 1.0})
    sync_mapping(mapping=mapping)
    first = wait_for(lambda: list(webhook.received), message="the failure alert")
    sabito_simulator.set_faults(None)
    sync_mapping(mapping=mapping)
    wait_for(lambda: len(webhook.received) == 2, message="the recovery alert")

    failing, recovered = (verified_payload(headers, body) for headers, body in webhook.received)
    runs = list(mapping.runs.order_by("started_at"))
    assert failing == {
        "event": "sabito_sync.mapping_failing",
        "mappingId": str(mapping.pk),
        "businessId": mapping.sabito_business_id,
        "businessName": mapping.business_name,
        "tenantId": str(mapping.tenant_id),
        "runId": str(runs[0].pk),
        "consecutiveFailures": 1,
        "error": runs[0].error_message,
        "finishedAt": runs[0].finished_at.isoformat(),
    }
    assert "HTTP 500" in failing["error"]
    assert (recovered["event"], recovered["runId"], recovered["consecutiveFailures"]) == (
        "sabito_sync.mapping_recovered",
        str(runs[1].pk),
        1,
    )
    for _headers, body in webhook.received:
        assert settings.SABITO_API_KEY.encode() not in body
    assert first


@pytest.fixture
def queued_alerts(monkeypatch):
    queued = []
    monkeypatch.setattr(alerts, "queue_alert", queued.append)
    return queued


def test_alerts_start_after_the_configured_failures_in_a_row(
    db, fake_sabito, settings, queued_alerts, django_capture_on_commit_callbacks
):
    settings.SABITO_SYNC_WEBHOOK_URL = "https://alerts.example/hook"
    settings.SABITO_SYNC_WEBHOOK_SECRET = SECRET
    settings.SABITO_SYNC_ALERT_AFTER_FAILURES = "2"
    mapping = SabitoMappingFactory()
    fake_sabito.records[mapping.sabito_business_id] = [sabito_record(1)]

    def sync(*, fail: bool):
        if fail:
            fake_sabito.answer_next(401)
        with django_capture_on_commit_callbacks(execute=True):
            sync_mapping(mapping=mapping)
        return [(alert["event"], alert["consecutiveFailures"]) for alert in queued_alerts]

    assert sync(fail=True) == []
    assert sync(fail=False) == []  # one failure, below the threshold: no recovery to announce
    assert sync(fail=True) == []
    assert sync(fail=True) == [("sabito_sync.mapping_failing", 2)]
    assert sync(fail=True)[-1] == ("sabito_sync.mapping_failing", 3)
    assert sync(fail=False)[-1] == ("sabito_sync.mapping_recovered", 3)
    assert sync(fail=False) == [
        ("sabito_sync.mapping_failing", 2),
        ("sabito_sync.mapping_failing", 3),
        ("sabito_sync.mapping_recovered", 3),
    ]


def test_no_alerts_without_a_webhook_url(db, fake_sabito, queued_alerts, django_capture_on_commit_callbacks):
    mapping = SabitoMappingFactory()
    fake_sabito.answer_next(401)

    with django_capture_on_commit_callbacks(execute=True):
        sync_mapping(mapping=mapping)

    assert queued_alerts == []


def test_webhook_url_without_a_secret_is_a_start_up_error(settings):
    settings.SABITO_SYNC_WEBHOOK_URL = "https://alerts.example/hook"
    settings.SABITO_SYNC_WEBHOOK_SECRET = ""

    assert "sabito_sync.E004" in [message.id for message in check_sabito_settings()]


def test_signals_tell_the_host_which_customers_a_sync_created_and_updated(
    db, fake_sabito, django_capture_on_commit_callbacks
):
    mapping = SabitoMappingFactory()
    existing = CustomerFactory(tenant=mapping.tenant, email="person2@example.com", name="Old name")
    fake_sabito.records[mapping.sabito_business_id] = [sabito_record(n) for n in (1, 2, 3)]
    pages, finished = [], []

    def on_page(sender, **kwargs):
        pages.append(kwargs)

    def on_finished(sender, **kwargs):
        finished.append(kwargs)

    customers_synced.connect(on_page)
    sync_finished.connect(on_finished)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = sync_mapping(mapping=mapping, full_sync=True)
    finally:
        customers_synced.disconnect(on_page)
        sync_finished.disconnect(on_finished)

    (page,) = pages
    created = set(Customer.objects.filter(sabito_customer_id__in=["cust-1", "cust-3"]).values_list("pk", flat=True))
    assert set(page["created_ids"]) == created and len(created) == 2
    assert page["updated_ids"] == [existing.pk]
    assert (page["mapping"], page["tenant_id"], str(page["run_id"])) == (mapping, mapping.tenant_id, result.run_id)
    (done,) = finished
    assert done["result"] is result and (result.created, result.updated) == (2, 1)


def test_a_failing_receiver_never_fails_the_sync(db, fake_sabito, django_capture_on_commit_callbacks):
    mapping = SabitoMappingFactory()
    fake_sabito.records[mapping.sabito_business_id] = [sabito_record(1)]

    def broken(sender, **kwargs):
        raise RuntimeError("the host's receiver is broken")

    customers_synced.connect(broken)
    sync_finished.connect(broken)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = sync_mapping(mapping=mapping)
    finally:
        customers_synced.disconnect(broken)
        sync_finished.disconnect(broken)

    assert result.success and result.created == 1


def test_the_api_key_is_scrubbed_from_an_alert_body(webhook, settings):
    tasks.send_alert_webhook.apply(
        kwargs={"payload": {"event": "e", "mappingId": "m", "error": f"echo {SABITO_TEST_KEY}"}}
    )

    ((headers, body),) = webhook.received
    assert verified_payload(headers, body)["error"] == "echo [redacted]"
