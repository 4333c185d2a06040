"""The API over real HTTP: a running server (pytest-django's `live_server`),
`requests` as the client, a real Celery worker consuming the real broker, and the
Sabito simulator over HTTP. The web process only queues syncs and waits for them."""

import contextlib
import http.client
import subprocess
import sys
from unittest.mock import ANY
from urllib.parse import urlsplit

import pytest
import requests
from celery.signals import task_postrun

from sabito_sync.models import Customer, SyncRun
from tests.api_fixtures import fresh_throttle_history, make_caller, queued_run  # noqa: F401 (fixtures)
from tests.conftest import celery_worker, subprocess_env, wait_for
from tests.factories import SabitoMappingFactory, TenantFactory
from tests.test_health import ROOT, free_port, healthz_answers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture
def session(make_caller):
    caller = make_caller()
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {caller.token.key}", "X-Tenant-ID": str(caller.tenant.pk)})
    session.tenant = caller.tenant
    with session:
        yield session


@pytest.fixture
def mapping(session, sabito_simulator):
    business_id = sabito_simulator.business_ids[0]
    return SabitoMappingFactory(
        tenant=session.tenant,
        sabito_business_id=business_id,
        business_name=sabito_simulator.business_names[business_id],
    )


@pytest.fixture
def slow_sabito(sabito_simulator, settings):
    """Sabito answering each page of 10 after 0.3 s: a sync of a business's 60
    customers takes seven answers, over two seconds, whatever the machine."""
    settings.SABITO_PAGE_SIZE = "10"
    sabito_simulator.set_faults({"slow_seconds": 0.3})
    return sabito_simulator


@pytest.fixture
def finished_tasks():
    """Task id → what the task returned, for every task this process's workers finish."""
    finished = {}

    def record(task_id=None, retval=None, **kwargs):
        finished[task_id] = retval

    task_postrun.connect(record, weak=False)
    yield finished
    task_postrun.disconnect(record)


def test_a_quick_sync_answers_200_with_the_guides_results(
    live_server, session, mapping, sabito_simulator, celery_worker_thread, settings
):
    settings.SABITO_SYNC_API_WAIT = "20"
    customers = len(sabito_simulator.customers(mapping.sabito_business_id))

    sync = session.post(f"{live_server.url}/api/sabito/sync", json={"fullSync": True}, timeout=60)
    status = session.get(f"{live_server.url}/api/sabito/sync/status", timeout=30)

    assert sync.status_code == 200
    assert sync.headers["Content-Type"] == "application/json"
    run = SyncRun.objects.get(mapping=mapping)
    assert sync.json() == {
        "success": True,
        "message": "Sync completed",
        "data": [
            {
                "success": True,
                "businessId": mapping.sabito_business_id,
                "customersProcessed": customers,
                "created": customers,
                "updated": 0,
                "skipped": 0,
                "errors": 0,
                "errorDetails": [],
                "runId": str(run.pk),
                "status": "succeeded",
            }
        ],
    }
    assert run.worker  # a worker ran it, not the web process
    [item] = status.json()["data"]
    assert item["lastSyncResult"]["created"] == customers
    assert item["lastSyncAt"] is not None and item["syncRunning"] is False


def test_a_slow_sync_answers_202_with_a_run_url_that_shows_progress_then_the_result(
    live_server, session, mapping, slow_sabito, celery_worker_thread, settings
):
    settings.SABITO_SYNC_API_WAIT = "0.5"
    customers = len(slow_sabito.customers(mapping.sabito_business_id))

    sync = session.post(f"{live_server.url}/api/sabito/sync/{mapping.pk}", json={"fullSync": True}, timeout=60)

    assert sync.status_code == 202
    [item] = sync.json()["data"]
    assert item["status"] in ("queued", "running")
    assert item["url"] == f"{live_server.url}/api/sabito/runs/{item['runId']}"
    seen = []

    def finished():
        run = session.get(item["url"], timeout=30).json()["data"]
        seen.append(run)
        return run["finishedAt"] is not None

    wait_for(finished, timeout=60, message="the run to finish")
    progress = [run for run in seen if run["status"] == "running" and 0 < run["customersProcessed"] < customers]
    assert progress, "no answer showed the run part way through"
    final = seen[-1]
    assert (final["status"], final["customersProcessed"], final["created"], final["error"]) == (
        "succeeded",
        customers,
        customers,
        None,
    )


def test_cancelling_a_running_sync_stops_it_after_its_page_and_keeps_the_watermark(
    live_server, session, mapping, slow_sabito, celery_worker_thread, settings
):
    settings.SABITO_SYNC_API_WAIT = "0"
    settings.SABITO_HEARTBEAT_SECONDS = "0.2"
    slow_sabito.set_faults({"slow_seconds": 1.0})  # several heartbeats per page, however busy the machine
    mapping.metadata = {"lastSyncedAt": "2026-11-30T12:00:00.000Z"}
    mapping.save()
    customers = len(slow_sabito.customers(mapping.sabito_business_id))
    [item] = session.post(f"{live_server.url}/api/sabito/sync/{mapping.pk}", json={}, timeout=60).json()["data"]
    wait_for(
        lambda: session.get(item["url"], timeout=30).json()["data"]["pagesDone"] >= 1,
        timeout=60,
        message="the run to write a page",
    )

    cancel = session.post(f"{item['url']}/cancel", json={}, timeout=30)

    assert cancel.status_code == 202
    final = wait_for(
        lambda: (run := session.get(item["url"], timeout=30).json()["data"])["finishedAt"] and run,
        timeout=60,
        message="the run to stop",
    )
    assert final["status"] == "cancelled" and "Cancelled on request" in final["error"]
    assert 0 < final["customersProcessed"] < customers
    assert Customer.objects.filter(tenant=mapping.tenant).count() == final["created"]
    mapping.refresh_from_db()
    assert mapping.metadata["lastSyncedAt"] == "2026-11-30T12:00:00.000Z"


def test_with_no_worker_consuming_the_answer_comes_within_the_wait_and_says_so(live_server, session, mapping, settings):
    settings.SABITO_SYNC_API_WAIT = "0.5"

    sync = session.post(f"{live_server.url}/api/sabito/sync", json={}, timeout=60)

    assert sync.status_code == 202
    body = sync.json()
    assert (
        f"No worker has picked up {mapping.business_name} within 0.5 s: is a Celery worker running" in body["message"]
    )
    [item] = body["data"]
    assert item["status"] == "queued"
    assert session.get(item["url"], timeout=30).json()["data"]["status"] == "queued"


def test_a_run_cancelled_while_queued_never_starts_when_a_worker_comes(
    live_server, session, mapping, sabito_simulator, finished_tasks
):
    [item] = session.post(f"{live_server.url}/api/sabito/sync", json={"async": True}, timeout=60).json()["data"]

    cancel = session.post(f"{item['url']}/cancel", timeout=30)
    with celery_worker(purge=False):
        wait_for(lambda: item["taskId"] in finished_tasks, timeout=60, message="the worker to take the task")

    assert cancel.status_code == 202 and cancel.json()["data"]["status"] == "cancelled"
    assert finished_tasks[item["taskId"]] == {
        "success": False,
        "error": ANY,
        "runId": item["runId"],
        "status": "cancelled",
    }
    assert SyncRun.objects.get(pk=item["runId"]).status == SyncRun.Status.CANCELLED
    assert sabito_simulator.stats["customerRequests"] == 0


def test_another_tenants_run_answers_404_exactly_like_a_missing_one_over_http(live_server, session):
    theirs = queued_run(SabitoMappingFactory(tenant=TenantFactory(name="Someone Else")))

    answers = [
        session.get(f"{live_server.url}/api/sabito/runs/{theirs.pk}", timeout=30),
        session.post(f"{live_server.url}/api/sabito/runs/{theirs.pk}/cancel", timeout=30),
        session.get(f"{live_server.url}/api/sabito/runs/00000000-0000-4000-8000-000000000000", timeout=30),
    ]

    assert [answer.status_code for answer in answers] == [404, 404, 404]
    assert len({answer.content for answer in answers}) == 1
    assert SyncRun.objects.get(pk=theirs.pk).status == SyncRun.Status.QUEUED


def test_missing_token_over_http_answers_401_json(live_server, session):
    response = requests.get(
        f"{live_server.url}/api/sabito/sync/status", headers={"X-Tenant-ID": str(session.tenant.pk)}, timeout=30
    )

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["success"] is False


@contextlib.contextmanager
def gunicorn(tmp_path, **env):
    """The project's gunicorn (its `gunicorn.conf.py`, one worker) on a port of its own,
    for the test database; yields its base URL."""
    port = free_port()
    with open(tmp_path / "gunicorn.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "nexpro.wsgi", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=subprocess_env(GUNICORN_WORKERS="1", **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: healthz_answers(port), timeout=60, message="gunicorn")
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=20)


def test_a_chunked_body_over_gunicorn_is_refused_not_read_as_empty(make_caller, tmp_path):
    """gunicorn hands a chunked request to Django with no Content-Length, which Django
    reads as an empty body: the sync endpoint must not run its defaults for it."""
    caller = make_caller()
    mapping = SabitoMappingFactory(tenant=caller.tenant)
    with gunicorn(tmp_path) as url:
        connection = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=30)
        connection.request(
            "POST",
            f"/api/sabito/sync/{mapping.pk}",
            body=iter([b'{"async": true, ', b'"fullSync": true}']),  # an iterable body is sent chunked
            headers={
                "Authorization": f"Bearer {caller.token.key}",
                "X-Tenant-ID": str(caller.tenant.pk),
                "Content-Type": "application/json",
            },
            encode_chunked=True,
        )
        response = connection.getresponse()
        answer = response.read()

    assert response.status == 411, (tmp_path / "gunicorn.log").read_text()[-3000:]
    assert b"Content-Length" in answer
    assert not SyncRun.objects.filter(mapping=mapping).exists()


def test_gunicorn_trusts_no_proxy_unless_told_and_keeps_no_shared_control_socket(make_caller, tmp_path):
    caller = make_caller()
    mapping = SabitoMappingFactory(tenant=caller.tenant)
    headers = {"Authorization": f"Bearer {caller.token.key}", "X-Tenant-ID": str(caller.tenant.pk)}
    forged = {**headers, "X-Forwarded-Proto": "https"}
    home = tmp_path / "home"
    home.mkdir()
    with gunicorn(tmp_path, HOME=str(home), XDG_RUNTIME_DIR=str(home)) as url:
        answer = requests.post(f"{url}/api/sabito/sync/{mapping.pk}", json={"async": True}, headers=forged, timeout=30)
    with gunicorn(tmp_path, GUNICORN_FORWARDED_ALLOW_IPS="127.0.0.1") as url:
        behind_a_proxy = requests.post(
            f"{url}/api/sabito/sync/{mapping.pk}", json={"async": True}, headers=forged, timeout=30
        )

    # A client's word does not make the run's URL https; the operator's proxy setting does.
    assert answer.status_code == 202 and answer.json()["data"][0]["url"].startswith("http://127.0.0.1:")
    assert behind_a_proxy.json()["data"][0]["url"].startswith("https://127.0.0.1:")
    assert not [path for path in home.rglob("*") if path.name.endswith(".ctl")]


def test_probes_on_their_own_port_answer_while_every_web_worker_is_busy(make_caller, tmp_path):
    """One web worker held by a sync request that waits for a worker nobody runs: a
    probe on the API's port waits behind it; on the probe port it answers at once."""
    import threading

    caller = make_caller()
    mapping = SabitoMappingFactory(tenant=caller.tenant)
    headers = {"Authorization": f"Bearer {caller.token.key}", "X-Tenant-ID": str(caller.tenant.pk)}
    probe_port = free_port()
    with gunicorn(tmp_path, GUNICORN_PROBE_BIND=f"127.0.0.1:{probe_port}", SABITO_SYNC_API_WAIT="12") as url:
        held = threading.Thread(
            target=requests.post, args=(f"{url}/api/sabito/sync/{mapping.pk}",), kwargs={"headers": headers}
        )
        held.start()
        wait_for(lambda: SyncRun.objects.filter(mapping=mapping).exists(), timeout=30, message="the held request")
        try:
            with pytest.raises(requests.Timeout):
                requests.get(f"{url}/healthz", timeout=3)  # queued behind the held request
            liveness = requests.get(f"http://127.0.0.1:{probe_port}/healthz", timeout=10)
            readiness = requests.get(f"http://127.0.0.1:{probe_port}/readyz", timeout=10)
            api_on_the_probe_port = requests.get(f"http://127.0.0.1:{probe_port}/api/sabito/status", timeout=10)
        finally:
            held.join(timeout=60)

    assert liveness.status_code == 200 and liveness.json() == {"status": "ok"}
    # Answered, whatever the verdict (this test runs no beat): it did not wait.
    assert readiness.status_code in (200, 503) and "status" in readiness.json()
    assert api_on_the_probe_port.status_code == 404


def post_at_once(url: str, session, bodies: list[dict]) -> list[requests.Response]:
    """POST every body to `url` from a thread each, released together."""
    import threading

    start, answers = threading.Barrier(len(bodies)), [None] * len(bodies)

    def post(position: int) -> None:
        start.wait()
        answers[position] = session.post(url, json=bodies[position], timeout=120)

    threads = [threading.Thread(target=post, args=(position,)) for position in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    return answers


def test_ten_simultaneous_triggers_of_one_mapping_make_one_run_and_one_scan_of_sabito(
    live_server, session, mapping, slow_sabito, celery_worker_thread, settings
):
    settings.SABITO_SYNC_API_WAIT = "1"  # shorter than the sync: most answers are 202
    # A sync of seven seconds at least: every trigger arrives while its run is queued or running.
    slow_sabito.set_faults({"slow_seconds": 1.0})
    customers = len(slow_sabito.customers(mapping.sabito_business_id))

    answers = post_at_once(f"{live_server.url}/api/sabito/sync/{mapping.pk}", session, [{"fullSync": True}] * 10)

    assert {answer.status_code for answer in answers} <= {200, 202}, [answer.text for answer in answers]
    (run,) = SyncRun.objects.filter(mapping=mapping)  # one run, no "already running" rows
    assert {answer.json()["data"][0]["runId"] for answer in answers} == {str(run.pk)}
    wait_for(lambda: SyncRun.objects.get(pk=run.pk).status == "succeeded", timeout=120, message="the run")
    # One full scan: every customer fetched once, by the one run.
    assert SyncRun.objects.get(pk=run.pk).customers_processed == customers
    assert Customer.objects.filter(tenant=mapping.tenant).count() == customers
    assert all("already running" not in answer.json()["message"] for answer in answers)


def test_five_simultaneous_sync_alls_scan_each_mapping_of_the_tenant_once(
    live_server, session, slow_sabito, celery_worker_thread, settings
):
    settings.SABITO_SYNC_API_WAIT = "1"
    slow_sabito.set_faults({"slow_seconds": 1.0})  # every trigger arrives while the runs are queued or running
    mappings = [
        SabitoMappingFactory(
            tenant=session.tenant,
            sabito_business_id=business_id,
            business_name=slow_sabito.business_names[business_id],
        )
        for business_id in slow_sabito.business_ids
    ]

    answers = post_at_once(f"{live_server.url}/api/sabito/sync", session, [{"fullSync": True}] * 5)

    assert {answer.status_code for answer in answers} <= {200, 202}, [answer.text for answer in answers]
    for mapping in mappings:
        (run,) = SyncRun.objects.filter(mapping=mapping)
        assert {
            item["runId"]
            for answer in answers
            for item in answer.json()["data"]
            if item["mappingId"] == str(mapping.pk)
        } == {str(run.pk)}
    wait_for(
        lambda: set(SyncRun.objects.filter(mapping__in=mappings).values_list("status", flat=True)) == {"succeeded"},
        timeout=180,
        message="every run",
    )


def test_a_full_sync_asked_while_an_incremental_one_is_queued_makes_it_full(live_server, session, mapping, settings):
    settings.SABITO_SYNC_API_WAIT = "0"  # no worker: the run stays queued

    incremental = session.post(f"{live_server.url}/api/sabito/sync/{mapping.pk}", json={"async": True}, timeout=60)
    full = session.post(
        f"{live_server.url}/api/sabito/sync/{mapping.pk}", json={"async": True, "fullSync": True}, timeout=60
    )

    (run,) = SyncRun.objects.filter(mapping=mapping)
    assert incremental.json()["data"][0]["runId"] == full.json()["data"][0]["runId"] == str(run.pk)
    assert run.status == "queued" and run.full_sync  # upgraded, not dropped


def test_a_full_sync_asked_while_an_incremental_one_runs_is_refused_naming_it(
    live_server, session, mapping, slow_sabito, celery_worker_thread, settings
):
    settings.SABITO_SYNC_API_WAIT = "0"
    slow_sabito.set_faults({"slow_seconds": 1.0})  # the incremental run still runs when the full one is asked
    mapping.metadata = {"lastSyncedAt": "2026-11-30T12:00:00.000Z"}
    mapping.save()
    incremental = session.post(f"{live_server.url}/api/sabito/sync/{mapping.pk}", json={}, timeout=60)
    run_id = incremental.json()["data"][0]["runId"]
    wait_for(lambda: SyncRun.objects.get(pk=run_id).status == "running", timeout=60, message="the run to start")

    full = session.post(f"{live_server.url}/api/sabito/sync/{mapping.pk}", json={"fullSync": True}, timeout=60)

    assert full.status_code == 409
    assert "already running" in full.json()["message"]
    assert SyncRun.objects.filter(mapping=mapping).count() == 1
