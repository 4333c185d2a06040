"""/metrics over real HTTP: the values are read from the database at scrape time, so
every web process on every machine answers the same numbers."""

from datetime import timedelta

import pytest
import requests
import responses
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from sabito_sync.engine.sync import sync_mapping
from sabito_sync.models import SyncRun

from .conftest import FakeSabito
from .factories import SabitoMappingFactory, TenantFactory, sabito_record


@pytest.fixture
def fake_sabito_beside(live_server):
    with responses.RequestsMock(assert_all_requests_are_fired=False, passthru_prefixes=(live_server.url,)) as mock:
        yield FakeSabito(mock)


def scrape(url: str, **headers) -> dict:
    """{(metric sample name, frozenset of labels): value} of one scrape."""
    response = requests.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_match_the_database_after_syncs(live_server, fake_sabito_beside):
    tenant = TenantFactory()
    good = SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-good")
    bad = SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-bad")
    never = SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-never")
    SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-off", is_active=False)
    fake_sabito_beside.records["biz-good"] = [sabito_record(n) for n in range(5)] + [
        {"id": "x", "email": "not-an-email"}
    ]
    fake_sabito_beside.records["biz-bad"] = [sabito_record(n) for n in range(10, 13)]
    sync_mapping(mapping=good, full_sync=True)
    fake_sabito_beside.records["biz-good"][0]["name"] = "Renamed"
    sync_mapping(mapping=good)  # the overlap re-reads all: 1 updated, 4 skipped, 1 error
    sync_mapping(mapping=bad, full_sync=True)
    fake_sabito_beside.answer_next(401)
    sync_mapping(mapping=bad)
    now = timezone.now()
    SyncRun.objects.create(
        mapping=never,
        trigger="beat",
        status="failed",
        started_at=now - timedelta(hours=1),
        heartbeat_at=now,
        finished_at=now,
        stop_reason="abandoned",
        error_message="Abandoned: no progress since ... (the worker probably died)",
    )
    SyncRun.objects.create(mapping=never, trigger="beat", status="running", started_at=now, heartbeat_at=now)

    metrics = scrape(live_server.url)

    runs = SyncRun.objects.all()
    for status in ("succeeded", "failed", "running", "already_running"):
        assert metrics[("sabito_sync_runs", frozenset({("status", status)}))] == runs.filter(status=status).count()
    for outcome, field in (("created", "created"), ("updated", "updated"), ("skipped", "skipped"), ("error", "errors")):
        assert metrics[("sabito_sync_records", frozenset({("outcome", outcome)}))] == sum(
            getattr(run, field) for run in runs
        )
    assert metrics[("sabito_sync_records", frozenset({("outcome", "created")}))] == 8
    assert metrics[("sabito_sync_records", frozenset({("outcome", "updated")}))] == 1
    assert metrics[("sabito_sync_runs_running", frozenset())] == 1
    assert metrics[("sabito_sync_dead_runs_reaped", frozenset())] == 1

    finished = [run for run in runs if run.status in ("succeeded", "failed")]
    assert metrics[("sabito_sync_run_duration_seconds_count", frozenset())] == len(finished) == 5
    assert metrics[("sabito_sync_run_duration_seconds_sum", frozenset())] == pytest.approx(
        sum(run.duration.total_seconds() for run in finished)
    )
    assert metrics[("sabito_sync_run_duration_seconds_bucket", frozenset({("le", "1.0")}))] == 4  # all but the reaped
    assert metrics[("sabito_sync_run_duration_seconds_bucket", frozenset({("le", "3600.0")}))] == 5

    def since_last_success(mapping):
        labels = frozenset(
            {
                ("mapping_id", str(mapping.pk)),
                ("business_id", mapping.sabito_business_id),
                ("tenant_id", str(tenant.pk)),
            }
        )
        return metrics[("sabito_sync_seconds_since_last_success", labels)]

    for mapping in (good, bad):
        last = SyncRun.objects.filter(mapping=mapping, status="succeeded").latest("started_at").finished_at
        assert since_last_success(mapping) == pytest.approx((timezone.now() - last).total_seconds(), abs=5)
    assert since_last_success(never) == float("inf")
    assert not [key for key in metrics if ("business_id", "biz-off") in key[1]]  # inactive mappings are not watched


def test_metrics_need_the_bearer_token_when_one_is_set(live_server, settings):
    settings.METRICS_TOKEN = "s3cret-token"

    missing = requests.get(f"{live_server.url}/metrics", timeout=10)
    wrong = requests.get(f"{live_server.url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)

    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert ("sabito_sync_runs_running", frozenset()) in scrape(live_server.url, Authorization="Bearer s3cret-token")


def test_metrics_cost_three_queries_whatever_the_number_of_runs(client, db, django_assert_num_queries):
    now = timezone.now()

    def add_runs(mappings: int, runs_each: int):
        for mapping in SabitoMappingFactory.create_batch(mappings):
            for n in range(runs_each):
                started = now - timedelta(hours=n + 1)
                SyncRun.objects.create(
                    mapping=mapping,
                    trigger="beat",
                    status="succeeded" if n % 2 else "failed",
                    started_at=started,
                    heartbeat_at=started,
                    finished_at=started + timedelta(seconds=n),
                )

    add_runs(1, 1)
    with django_assert_num_queries(3):
        assert client.get("/metrics").status_code == 200
    add_runs(20, 6)
    with django_assert_num_queries(3):
        assert client.get("/metrics").status_code == 200
