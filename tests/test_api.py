"""The REST API over DRF's test client: the guide's endpoints and shapes, who may
call what, and bad input. Sabito is faked at the HTTP boundary (`fake_sabito`)."""

import uuid
from unittest.mock import ANY

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from sabito_sync import tasks
from sabito_sync.models import Customer, Membership, SabitoMapping, SyncRun
from tests.api_fixtures import (  # noqa: F401 (fixtures)
    MAPPINGS,
    STATUS,
    SYNC_ALL,
    UNREACHABLE_CACHES,
    admin,
    error_body,
    finished_run,
    fresh_throttle_history,
    inline_worker,
    make_caller,
    mapping_url,
    member,
    operator,
    queued_run,
    run_url,
    running_run,
    runs_url,
    sync_one_url,
    tenant,
)
from tests.conftest import SABITO_TEST_KEY
from tests.factories import SabitoMappingFactory, TenantFactory, sabito_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def mapping(tenant):
    return SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-a", business_name="iCreations Global")


def result_item(business_id, *, processed=0, created=0, updated=0, skipped=0) -> dict:
    return {
        "success": True,
        "businessId": business_id,
        "customersProcessed": processed,
        "created": created,
        "updated": updated,
        "skipped": skipped,
        "errors": 0,
        "errorDetails": [],
        "runId": ANY,
        "status": "succeeded",
    }


# --- POST /api/sabito/sync ------------------------------------------------------------------


def test_sync_all_answers_the_guides_shape_for_each_active_mapping(admin, tenant, fake_sabito, inline_worker):
    SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-a", business_name="A business")
    SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-b", business_name="B business")
    SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-off", business_name="C business", is_active=False)
    fake_sabito.records["biz-a"] = [sabito_record(1), sabito_record(2)]
    fake_sabito.records["biz-b"] = [sabito_record(3)]

    response = admin.post(SYNC_ALL, {"fullSync": False})

    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "message": "Sync completed",
        "data": [result_item("biz-a", processed=2, created=2), result_item("biz-b", processed=1, created=1)],
    }
    assert Customer.objects.filter(tenant=tenant).count() == 3


def test_sync_all_counts_created_updated_and_skipped_like_the_guide(admin, mapping, fake_sabito, inline_worker):
    fake_sabito.records["biz-a"] = [sabito_record(1), sabito_record(2)]
    admin.post(SYNC_ALL, {"fullSync": False})
    fake_sabito.records["biz-a"] = [sabito_record(1), sabito_record(2, name="Renamed"), sabito_record(3)]

    response = admin.post(SYNC_ALL, {"fullSync": False})

    assert response.json()["data"] == [result_item("biz-a", processed=3, created=1, updated=1, skipped=1)]


def test_sync_without_a_body_is_incremental(admin, mapping, fake_sabito, inline_worker):
    admin.post(SYNC_ALL, {"fullSync": True})

    admin.post(SYNC_ALL)

    assert "updatedAfter" not in fake_sabito.requests[0]
    assert "updatedAfter" in fake_sabito.requests[-1]


def test_full_sync_asks_sabito_for_every_customer(admin, mapping, fake_sabito, inline_worker):
    admin.post(SYNC_ALL, {"fullSync": False})

    admin.post(SYNC_ALL, {"fullSync": True})

    assert "updatedAfter" not in fake_sabito.requests[-1]
    assert SyncRun.objects.filter(mapping=mapping, full_sync=True, trigger=SyncRun.Trigger.API).count() == 1


def test_sync_all_reports_failures_in_success_and_message(admin, tenant, fake_sabito, inline_worker):
    SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-a", business_name="A business")
    SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-b", business_name="B business")
    fake_sabito.answer_next(401, '{"error": "bad key"}')  # A's first request

    body = admin.post(SYNC_ALL, {"fullSync": False}).json()

    assert body["success"] is False
    assert body["message"] == "Sync completed with failures for 1 of 2 mappings"
    failed, succeeded = body["data"]
    assert failed["success"] is False and "401" in failed["error"]
    assert succeeded["success"] is True and "error" not in succeeded


def test_sync_all_reports_an_already_running_mapping_as_such_and_not_as_a_failure(
    admin, tenant, mapping, fake_sabito, inline_worker
):
    holder = running_run(mapping)  # incremental: it cannot do the full sync asked for
    SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-b", business_name="B business")

    body = admin.post(SYNC_ALL, {"fullSync": True}).json()

    assert body["success"] is True
    assert body["message"] == "Sync completed; already running, so not started again: iCreations Global"
    synced, running = body["data"]  # by business name
    assert (running["success"], running["alreadyRunning"], running["status"], running["runId"]) == (
        False,
        True,
        "already_running",
        str(holder.pk),  # the run holding the mapping; no row recorded for the refusal
    )
    assert SyncRun.objects.filter(mapping=mapping).count() == 1
    assert running["error"].startswith("A sync is already running for iCreations Global since ")
    assert synced["status"] == "succeeded" and "alreadyRunning" not in synced
    assert {request["businessId"] for request in fake_sabito.requests} == {"biz-b"}


def test_sync_all_without_active_mappings_answers_an_empty_list(admin, tenant, fake_sabito, inline_worker):
    SabitoMappingFactory(tenant=tenant, is_active=False)

    response = admin.post(SYNC_ALL, {"fullSync": False})

    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Sync completed", "data": []}


def test_no_answer_ever_contains_the_sabito_api_key(admin, mapping, fake_sabito, inline_worker):
    fake_sabito.answer_next(401, '{"error": "bad key"}')

    sync = admin.post(SYNC_ALL, {"fullSync": False})
    listed = [admin.get(STATUS), admin.get(MAPPINGS), admin.get(mapping_url(mapping)), admin.get(runs_url(mapping))]

    for response in [sync, *listed]:
        assert SABITO_TEST_KEY not in response.content.decode()
    assert fake_sabito.requests[0]["X-API-Key"] == SABITO_TEST_KEY  # the key was really used


def test_sync_result_reports_customers_marked_missing_after_a_full_sync(admin, mapping, fake_sabito, inline_worker):
    fake_sabito.records["biz-a"] = [sabito_record(1), sabito_record(2)]
    admin.post(SYNC_ALL, {"fullSync": True})
    fake_sabito.records["biz-a"] = [sabito_record(1)]

    [item] = admin.post(SYNC_ALL, {"fullSync": True}).json()["data"]

    assert item["markedMissing"] == 1


def test_misconfigured_sabito_settings_answer_503_without_details(admin, mapping, fake_sabito, settings):
    settings.SABITO_API_URL = "ftp://sabito.internal"

    response = admin.post(SYNC_ALL, {"fullSync": False})

    assert response.status_code == 503
    assert "misconfigured" in error_body(response)["message"]
    assert "sabito.internal" not in response.content.decode()


# --- POST /api/sabito/sync/<mappingId> ------------------------------------------------------


def test_sync_one_mapping_answers_a_list_of_one_result(admin, mapping, fake_sabito, inline_worker):
    SabitoMappingFactory(tenant=mapping.tenant, sabito_business_id="biz-other")
    fake_sabito.records["biz-a"] = [sabito_record(1)]

    response = admin.post(sync_one_url(mapping), {"fullSync": False})

    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "message": "Sync completed",
        "data": [result_item("biz-a", processed=1, created=1)],
    }
    assert {request["businessId"] for request in fake_sabito.requests} == {"biz-a"}


def test_sync_one_inactive_mapping_named_explicitly_still_syncs(admin, tenant, fake_sabito, inline_worker):
    inactive = SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-off", is_active=False)
    fake_sabito.records["biz-off"] = [sabito_record(1)]

    response = admin.post(sync_one_url(inactive), {"fullSync": True})

    assert response.json()["data"] == [result_item("biz-off", processed=1, created=1)]


def test_sync_one_failure_answers_success_false_with_the_error(admin, mapping, fake_sabito, inline_worker):
    fake_sabito.answer_next(403, '{"error": "forbidden"}')

    response = admin.post(sync_one_url(mapping), {"fullSync": False})

    body = response.json()
    assert response.status_code == 200
    assert body["success"] is False
    assert body["message"] == "Sync completed with failures for 1 of 1 mapping"
    assert "403" in body["data"][0]["error"]


def test_sync_one_full_while_an_incremental_sync_runs_answers_409(admin, mapping, fake_sabito):
    running_run(mapping)

    response = admin.post(sync_one_url(mapping), {"fullSync": True})

    assert response.status_code == 409
    assert error_body(response)["message"].startswith("A sync is already running for iCreations Global")
    assert fake_sabito.requests == []


def test_a_full_sync_asked_as_the_queued_incremental_run_finishes_is_queued_not_refused(
    admin, mapping, fake_sabito, settings, monkeypatch
):
    """The queued incremental run was claimed and finished by a worker between the
    trigger's look and its upgrade: nothing holds the mapping, so the full sync asked
    for is queued, not refused as if a run were still going."""
    from sabito_sync.services import syncs

    settings.SABITO_SYNC_API_WAIT = "0"
    now = timezone.now()
    queued = SyncRun.objects.create(
        mapping=mapping, status=SyncRun.Status.QUEUED, trigger="beat", started_at=now, heartbeat_at=now
    )
    look = syncs.joinable_run_of

    def look_then_the_worker_finishes_it(mapping_ids):
        found = look(mapping_ids)
        SyncRun.objects.filter(pk=queued.pk).update(status=SyncRun.Status.SUCCEEDED)
        return found

    monkeypatch.setattr(syncs, "joinable_run_of", look_then_the_worker_finishes_it)

    response = admin.post(sync_one_url(mapping), {"fullSync": True})

    assert response.status_code == 202
    new_run = SyncRun.objects.get(mapping=mapping, status=SyncRun.Status.QUEUED)
    assert new_run.full_sync and response.json()["data"][0]["runId"] == str(new_run.pk)


@pytest.mark.parametrize("full_sync", [False, True])
def test_a_trigger_while_a_run_that_does_what_it_asks_is_running_joins_it(
    admin, mapping, fake_sabito, settings, full_sync
):
    settings.SABITO_SYNC_API_WAIT = "0"
    holder = running_run(mapping, full_sync=True)

    response = admin.post(sync_one_url(mapping), {"fullSync": full_sync})

    assert response.status_code == 202
    assert response.json()["data"][0]["runId"] == str(holder.pk)
    assert SyncRun.objects.filter(mapping=mapping).count() == 1 and fake_sabito.requests == []


def test_sync_one_unknown_id_answers_404(admin, fake_sabito):
    response = admin.post(sync_one_url(str(uuid.uuid4())), {"fullSync": False})

    assert response.status_code == 404
    assert error_body(response) == {"success": False, "message": "Sabito mapping not found.", "errors": {}}


def test_sync_one_malformed_id_answers_400(admin, fake_sabito):
    response = admin.post(sync_one_url("not-a-uuid"), {"fullSync": False})

    assert response.status_code == 400
    assert "mappingId" in error_body(response)["errors"]


# --- "async": true --------------------------------------------------------------------------


def test_async_sync_all_answers_202_with_a_task_per_active_mapping(
    admin, tenant, django_capture_on_commit_callbacks, fake_sabito
):
    first = SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-a", business_name="A")
    second = SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-b", business_name="B")
    SabitoMappingFactory(tenant=tenant, is_active=False)

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin.post(SYNC_ALL, {"fullSync": True, "async": True})

    assert response.status_code == 202
    body = response.json()
    assert (
        body["success"] is True and body["message"] == "Sync queued. Poll each run's url for its progress and result."
    )
    assert [(item["mappingId"], item["businessId"], item["status"]) for item in body["data"]] == [
        (str(first.pk), "biz-a", "queued"),
        (str(second.pk), "biz-b", "queued"),
    ]
    assert all(uuid.UUID(item["taskId"]) for item in body["data"])
    for item in body["data"]:
        assert item["url"] == f"http://testserver/api/sabito/runs/{item['runId']}"
    assert len(callbacks) == 2  # queued on commit, not inside the request's transaction
    # Nothing ran: each mapping has a run waiting for a worker, nothing more.
    assert fake_sabito.requests == []
    assert sorted(SyncRun.objects.values_list("mapping_id", "status")) == sorted(
        [(first.pk, SyncRun.Status.QUEUED), (second.pk, SyncRun.Status.QUEUED)]
    )


def test_async_sync_sends_the_task_with_the_answered_id(
    admin, mapping, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(tasks.sync_mapping_task, "apply_async", lambda **kwargs: sent.append(kwargs))

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(sync_one_url(mapping), {"fullSync": True, "async": True})

    task_id = response.json()["data"][0]["taskId"]
    run = SyncRun.objects.get(mapping=mapping, status=SyncRun.Status.QUEUED)
    assert sent == [
        {"args": [str(mapping.pk), True, SyncRun.Trigger.API], "kwargs": {"run_id": str(run.pk)}, "task_id": task_id}
    ]


def test_async_full_sync_of_a_mapping_whose_incremental_sync_runs_answers_409(
    admin, mapping, django_capture_on_commit_callbacks
):
    running_run(mapping)

    with django_capture_on_commit_callbacks() as callbacks:
        response = admin.post(sync_one_url(mapping), {"async": True, "fullSync": True})

    assert response.status_code == 409
    assert "already running" in error_body(response)["message"]
    assert callbacks == []


@pytest.mark.django_db(transaction=True)
def test_async_sync_with_the_broker_down_answers_503(make_caller, monkeypatch):
    caller = make_caller()
    mapping = SabitoMappingFactory(tenant=caller.tenant)

    def broker_down(**kwargs):
        raise OperationalError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr(tasks.sync_mapping_task, "apply_async", broker_down)

    response = caller.post(sync_one_url(mapping), {"async": True})

    assert response.status_code == 503
    assert "task queue is unavailable" in error_body(response)["message"]


# --- Waiting for the workers ------------------------------------------------------------------


def test_a_sync_not_picked_up_within_the_wait_answers_202_saying_no_worker_took_it(admin, mapping, settings):
    settings.SABITO_SYNC_API_WAIT = "0.2"  # no worker runs here

    response = admin.post(sync_one_url(mapping), {"fullSync": True})

    assert response.status_code == 202
    body = response.json()
    assert body["message"] == (
        "Sync queued; 1 of 1 run not finished after 0.2 s. Poll each run's url for its progress and result. "
        "No worker has picked up iCreations Global within 0.2 s: is a Celery worker running (and not busy with "
        "other syncs)?"
    )
    [item] = body["data"]
    run = SyncRun.objects.get(mapping=mapping)
    assert item == {
        "mappingId": str(mapping.pk),
        "businessId": "biz-a",
        "runId": str(run.pk),
        "taskId": ANY,
        "status": "queued",
        "url": f"http://testserver/api/sabito/runs/{run.pk}",
    }


def test_without_a_wait_a_sync_answers_202_at_once_without_blaming_the_workers(admin, mapping):
    response = admin.post(SYNC_ALL, {"fullSync": False})

    assert response.status_code == 202
    assert response.json()["message"] == "Sync queued. Poll each run's url for its progress and result."


@pytest.fixture
def before_the_worker(monkeypatch, inline_worker):
    """`before_the_worker(do)`: `do(run)` happens to each queued run before the
    inline worker takes it."""
    from sabito_sync.services import queueing

    queue_and_run = queueing.enqueue_mapping_sync

    def arrange(do):
        def queue(**kwargs):
            do(kwargs["run"])
            return queue_and_run(**kwargs)

        monkeypatch.setattr(queueing, "enqueue_mapping_sync", queue)

    return arrange


def test_a_mapping_the_worker_finds_already_running_is_reported_as_such(admin, mapping, fake_sabito, before_the_worker):
    before_the_worker(lambda run: running_run(run.mapping))

    response = admin.post(sync_one_url(mapping), {"fullSync": False})

    # Never a 200 "Sync completed" for a sync this request did not get: a 409 naming
    # the run that took the mapping first.
    assert response.status_code == 409
    holder = SyncRun.objects.get(mapping=mapping, trigger=SyncRun.Trigger.BEAT)
    assert error_body(response)["message"].startswith("A sync is already running for iCreations Global since")
    assert SyncRun.objects.get(mapping=mapping, trigger=SyncRun.Trigger.API).status == "already_running"
    assert holder.status == "running"
    assert fake_sabito.requests == []


def test_a_run_cancelled_before_the_worker_took_it_is_reported_cancelled_not_failed(
    admin, mapping, fake_sabito, before_the_worker
):
    from sabito_sync.services.syncs import cancel_run

    before_the_worker(lambda run: cancel_run(actor=None, run=run))

    body = admin.post(sync_one_url(mapping), {"fullSync": False}).json()

    assert body["success"] is True
    assert body["message"] == "Sync completed; cancelled: iCreations Global"
    [item] = body["data"]
    assert (item["success"], item["status"]) == (False, "cancelled")
    assert item["error"] == "Cancelled by the platform before a worker started it."
    assert fake_sabito.requests == []


# --- GET /api/sabito/runs/<runId> and POST /api/sabito/runs/<runId>/cancel -------------------


def test_run_endpoint_shows_status_counters_so_far_and_pages_done(admin, mapping):
    run = running_run(mapping, customers_processed=250, created=240, updated=10, pages_done=3, full_sync=True)

    response = admin.get(run_url(run))

    assert response.status_code == 200
    data = response.json()["data"]
    assert {name: data[name] for name in ("id", "mappingId", "status", "fullSync", "trigger", "finishedAt")} == {
        "id": str(run.pk),
        "mappingId": str(mapping.pk),
        "status": "running",
        "fullSync": True,
        "trigger": "beat",
        "finishedAt": None,
    }
    assert (data["customersProcessed"], data["created"], data["updated"], data["pagesDone"]) == (250, 240, 10, 3)
    assert (data["cancelRequested"], data["error"], data["note"], data["updatedAfter"]) == (False, None, None, None)
    assert data["startedAt"]


def test_run_endpoint_for_an_unknown_run_answers_404(admin):
    response = admin.get(run_url(str(uuid.uuid4())))

    assert response.status_code == 404
    assert error_body(response)["message"] == "Sync run not found."


def test_run_endpoint_for_a_malformed_id_answers_400(admin):
    response = admin.get(run_url("not-a-uuid"))

    assert response.status_code == 400
    assert "runId" in error_body(response)["errors"]


def test_cancelling_a_queued_run_records_it_cancelled_at_once(admin, mapping):
    run = queued_run(mapping)

    response = admin.post(f"{run_url(run)}/cancel")

    assert response.status_code == 202
    body = response.json()
    assert body["message"] == "Run cancelled before a worker started it."
    assert (body["data"]["status"], body["data"]["cancelRequested"]) == ("cancelled", True)
    run.refresh_from_db()
    assert run.status == SyncRun.Status.CANCELLED and run.finished_at is not None
    assert run.error_message == f"Cancelled by {admin.user.username} before a worker started it."


def test_cancelling_a_running_run_asks_it_to_stop_after_its_page(admin, mapping):
    run = running_run(mapping)

    response = admin.post(f"{run_url(run)}/cancel")

    assert response.status_code == 202
    body = response.json()
    assert body["message"] == "Cancel requested: the run stops once the pages it has fetched are written."
    assert (body["data"]["status"], body["data"]["cancelRequested"]) == ("running", True)
    run.refresh_from_db()
    assert run.status == SyncRun.Status.RUNNING and run.cancel_requested_at is not None


def test_cancelling_a_running_run_twice_keeps_the_first_requests_time(admin, mapping):
    run = running_run(mapping)
    admin.post(f"{run_url(run)}/cancel")
    first = SyncRun.objects.get(pk=run.pk).cancel_requested_at

    again = admin.post(f"{run_url(run)}/cancel")

    assert again.status_code == 202
    assert SyncRun.objects.get(pk=run.pk).cancel_requested_at == first


def test_cancelling_a_finished_run_answers_409_and_changes_nothing(admin, mapping):
    run = finished_run(mapping)

    response = admin.post(f"{run_url(run)}/cancel")

    assert response.status_code == 409
    assert (
        error_body(response)["message"] == f"Run {run.pk} has already finished (succeeded); there is nothing to cancel."
    )
    run.refresh_from_db()
    assert run.status == SyncRun.Status.SUCCEEDED and run.cancel_requested_at is None


# --- GET /api/sabito/sync/status --------------------------------------------------------------


def test_status_answers_the_guides_shape(admin, mapping, fake_sabito, inline_worker):
    fake_sabito.records["biz-a"] = [sabito_record(1), sabito_record(2)]
    admin.post(SYNC_ALL, {"fullSync": False})
    mapping.refresh_from_db()

    response = admin.get(STATUS)

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    [item] = body["data"]
    assert list(item) == [
        "id",
        "sabitoBusinessId",
        "businessName",
        "tenantName",
        "lastSyncAt",
        "lastSyncResult",
        "lastUpdated",
        "syncRunning",
        "isActive",
    ]
    assert item["id"] == str(mapping.pk)
    assert item["sabitoBusinessId"] == "biz-a"
    assert item["businessName"] == "iCreations Global"
    assert item["tenantName"] == "My Tenant"
    assert item["lastSyncAt"] == mapping.metadata["lastSyncedAt"]
    assert item["lastSyncResult"] == mapping.metadata["lastSyncResult"]
    assert {"customersProcessed": 2, "created": 2, "updated": 0, "skipped": 0, "errors": 0}.items() <= item[
        "lastSyncResult"
    ].items()
    assert item["lastUpdated"].replace("Z", "+00:00") == mapping.updated_at.isoformat()
    assert item["syncRunning"] is False
    assert item["isActive"] is True


def test_status_of_a_never_synced_mapping_has_nulls(admin, mapping):
    [item] = admin.get(STATUS).json()["data"]

    assert item["lastSyncAt"] is None
    assert item["lastSyncResult"] is None


def test_status_shows_a_running_sync(admin, mapping):
    running_run(mapping)

    [item] = admin.get(STATUS).json()["data"]

    assert item["syncRunning"] is True


def test_status_tolerates_hand_edited_metadata(admin, tenant):
    SabitoMappingFactory(tenant=tenant, metadata={"lastSyncedAt": 12, "lastSyncResult": "ok"})
    SabitoMappingFactory(tenant=tenant, metadata=["not", "a", "dict"])

    response = admin.get(STATUS)

    assert response.status_code == 200
    assert [(item["lastSyncAt"], item["lastSyncResult"]) for item in response.json()["data"]] == [(None, None)] * 2


@pytest.mark.parametrize("count", [3, 30])
def test_status_runs_the_same_queries_for_any_number_of_mappings(admin, tenant, count, django_assert_num_queries):
    for n in range(count):
        mapping = SabitoMappingFactory(tenant=tenant)
        if n % 2:
            running_run(mapping)

    # The token with its user, the membership with its tenant, the cache key's
    # fingerprint, the mappings with their running flag.
    with django_assert_num_queries(4):
        response = admin.get(STATUS)

    assert len(response.json()["data"]) == count


# --- Mappings ---------------------------------------------------------------------------------


MAPPING_FIELDS = [
    "id",
    "sabitoBusinessId",
    "businessName",
    "tenantId",
    "tenantName",
    "isActive",
    "lastSyncAt",
    "lastSyncResult",
    "createdAt",
    "updatedAt",
]


def test_list_mappings_answers_the_tenants_mappings(admin, tenant, mapping):
    response = admin.get(MAPPINGS)

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    [item] = body["data"]
    assert list(item) == MAPPING_FIELDS
    assert item["id"] == str(mapping.pk)
    assert item["tenantId"] == str(tenant.pk)
    assert item["tenantName"] == "My Tenant"
    assert item["sabitoBusinessId"] == "biz-a"


def test_operator_creates_a_mapping_in_the_header_tenant(operator, tenant):
    response = operator.post(MAPPINGS, {"sabitoBusinessId": "eb8c70e2", "businessName": "iCreations Global"})

    assert response.status_code == 201
    data = response.json()["data"]
    mapping = SabitoMapping.objects.get(sabito_business_id="eb8c70e2")
    assert mapping.tenant == tenant and mapping.is_active
    assert data["id"] == str(mapping.pk)
    assert {key: data[key] for key in ["businessName", "isActive", "lastSyncAt", "lastSyncResult"]} == {
        "businessName": "iCreations Global",
        "isActive": True,
        "lastSyncAt": None,
        "lastSyncResult": None,
    }


def test_create_inactive_mapping(operator):
    response = operator.post(MAPPINGS, {"sabitoBusinessId": "biz-x", "businessName": "X", "isActive": False})

    assert response.json()["data"]["isActive"] is False


def test_create_mapping_for_an_already_mapped_business_answers_400(operator, mapping):
    response = operator.post(MAPPINGS, {"sabitoBusinessId": "biz-a", "businessName": "Again"})

    assert response.status_code == 400
    body = error_body(response)
    # Only operators get this far, so the answer may say where the business is mapped.
    assert f"already mapped to tenant My Tenant (mapping {mapping.pk})" in body["message"]
    assert "sabitoBusinessId" in body["errors"]
    assert SabitoMapping.objects.filter(sabito_business_id="biz-a").count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"businessName": "No id"},
        {"sabitoBusinessId": "", "businessName": "Blank id"},
        {"sabitoBusinessId": 123, "businessName": "Numeric id"},
        {"sabitoBusinessId": "x" * 101, "businessName": "Too long"},
        {"sabitoBusinessId": "biz\x00", "businessName": "NUL"},
        {"sabitoBusinessId": " biz-x", "businessName": "Leading space"},
        {"sabitoBusinessId": "biz-x", "businessName": "   "},
        {"sabitoBusinessId": "biz-x", "businessName": "X", "tenantId": str(uuid.uuid4())},
        {"sabitoBusinessId": "biz-x", "businessName": "X", "isActive": "yes"},
    ],
)
def test_create_mapping_with_invalid_body_answers_400(operator, body):
    response = operator.post(MAPPINGS, body)

    assert response.status_code == 400
    error_body(response)
    assert not SabitoMapping.objects.exists()


def test_retrieve_mapping(admin, mapping):
    response = admin.get(mapping_url(mapping))

    assert response.status_code == 200
    assert list(response.json()["data"]) == MAPPING_FIELDS
    assert response.json()["data"]["id"] == str(mapping.pk)


def test_update_mapping_name_and_active_flag(admin, mapping):
    response = admin.patch(mapping_url(mapping), {"businessName": "New name", "isActive": False})

    assert response.status_code == 200
    assert response.json()["data"]["businessName"] == "New name"
    assert response.json()["data"]["isActive"] is False
    mapping.refresh_from_db()
    assert (mapping.business_name, mapping.is_active) == ("New name", False)


def test_update_mapping_keeps_its_sync_metadata(admin, mapping):
    SabitoMapping.objects.filter(pk=mapping.pk).update(metadata={"lastSyncedAt": "2025-12-14T12:00:00.000Z"})

    admin.patch(mapping_url(mapping), {"businessName": "New name"})

    mapping.refresh_from_db()
    assert mapping.metadata == {"lastSyncedAt": "2025-12-14T12:00:00.000Z"}


def test_delete_mapping_deletes_it_and_its_runs_but_keeps_customers(
    admin, operator, mapping, fake_sabito, inline_worker
):
    fake_sabito.records["biz-a"] = [sabito_record(1)]
    admin.post(sync_one_url(mapping), {"fullSync": False})

    response = operator.delete(mapping_url(mapping))

    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Mapping deleted"}
    assert not SabitoMapping.objects.exists() and not SyncRun.objects.exists()
    assert Customer.objects.count() == 1


def test_delete_mapping_while_it_syncs_answers_409(operator, mapping):
    running_run(mapping)

    response = operator.delete(mapping_url(mapping))

    assert response.status_code == 409
    assert "running" in error_body(response)["message"]
    assert SabitoMapping.objects.filter(pk=mapping.pk).exists()


# --- GET /api/sabito/mappings/<id>/runs -----------------------------------------------------


def test_runs_are_listed_newest_first_with_their_fields(admin, mapping, fake_sabito, inline_worker):
    fake_sabito.records["biz-a"] = [sabito_record(1), {"id": "cust-bad", "email": "not an email"}]
    admin.post(sync_one_url(mapping), {"fullSync": True})
    fake_sabito.answer_next(401, '{"error": "bad key"}')
    admin.post(sync_one_url(mapping), {"fullSync": False})

    response = admin.get(runs_url(mapping))

    assert response.status_code == 200
    body = response.json()
    assert (body["success"], body["count"], body["next"], body["previous"]) == (True, 2, None, None)
    newest, oldest = body["data"]
    assert list(oldest) == [
        "id",
        "mappingId",
        "fullSync",
        "trigger",
        "status",
        "startedAt",
        "finishedAt",
        "updatedAfter",
        "customersProcessed",
        "created",
        "updated",
        "skipped",
        "errors",
        "markedMissing",
        "pagesDone",
        "cancelRequested",
        "errorDetails",
        "error",
        "note",
    ]
    assert (newest["status"], newest["fullSync"], newest["trigger"]) == ("failed", False, "api")
    assert "401" in newest["error"] and newest["updatedAfter"] is not None
    assert (oldest["status"], oldest["fullSync"], oldest["updatedAfter"], oldest["error"]) == (
        "succeeded",
        True,
        None,
        None,
    )
    assert (oldest["customersProcessed"], oldest["created"], oldest["errors"]) == (2, 1, 1)
    assert oldest["errorDetails"][0]["sabitoCustomerId"] == "cust-bad"


def test_runs_are_paginated(admin, mapping):
    for _ in range(5):
        finished_run(mapping)

    first = admin.get(runs_url(mapping), {"pageSize": 2}).json()
    last = admin.get(runs_url(mapping), {"pageSize": 2, "page": 3}).json()

    assert (first["count"], len(first["data"]), first["previous"]) == (5, 2, None)
    assert "page=2" in first["next"]
    assert (len(last["data"]), last["next"]) == (1, None)


def test_runs_page_past_the_last_answers_404(admin, mapping):
    response = admin.get(runs_url(mapping), {"page": 2})

    assert response.status_code == 404
    error_body(response)


@pytest.mark.parametrize(
    "query", [{"page": "abc"}, {"page": "0"}, {"page": "-1"}, {"pageSize": "0"}, {"pageSize": "101"}, {"pageSize": "x"}]
)
def test_runs_malformed_paging_answers_400(admin, mapping, query):
    response = admin.get(runs_url(mapping), query)

    assert response.status_code == 400
    assert set(error_body(response)["errors"]) == set(query)


# --- Authentication ---------------------------------------------------------------------------


ENDPOINTS = [
    ("post", SYNC_ALL),
    ("get", STATUS),
    ("get", MAPPINGS),
    ("post", MAPPINGS),
]


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_no_token_answers_401(client, method, path):
    response = getattr(client, method)(path, HTTP_X_TENANT_ID=str(uuid.uuid4()))

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    error_body(response)


@pytest.mark.parametrize(
    "authorization", ["Bearer not-a-real-token", "Bearer", "Bearer two words", "Basic dXNlcjpwYXNz"]
)
def test_bad_token_answers_401(admin, authorization):
    admin.client.credentials(HTTP_AUTHORIZATION=authorization, HTTP_X_TENANT_ID=str(admin.tenant.pk))

    response = admin.get(STATUS)

    assert response.status_code == 401
    error_body(response)


def test_token_keyword_other_than_bearer_answers_401_naming_the_scheme(admin):
    admin.client.credentials(HTTP_AUTHORIZATION=f"Token {admin.token.key}", HTTP_X_TENANT_ID=str(admin.tenant.pk))

    response = admin.get(STATUS)

    assert response.status_code == 401
    assert "send Authorization: Bearer <token>" in error_body(response)["message"]


def test_deactivated_users_token_answers_401(admin):
    admin.user.is_active = False
    admin.user.save()

    response = admin.get(STATUS)

    assert response.status_code == 401
    assert "inactive" in error_body(response)["message"]


# --- Tenant header and roles -------------------------------------------------------------------


def test_missing_tenant_header_answers_400(admin):
    admin.acting_for(None)

    response = admin.get(STATUS)

    assert response.status_code == 400
    body = error_body(response)
    assert "X-Tenant-ID" in body["errors"]
    assert "X-Tenant-ID header is required" in body["message"]


@pytest.mark.parametrize("value", ["not-a-uuid", "123", "' OR 1=1 --", " "])
def test_malformed_tenant_header_answers_400(admin, value):
    admin.acting_for(value)

    response = admin.get(STATUS)

    assert response.status_code == 400
    assert "X-Tenant-ID" in error_body(response)["errors"]


def test_non_member_answers_403(make_caller):
    outsider = make_caller(role=None)

    response = outsider.get(STATUS)

    assert response.status_code == 403
    assert "not a member" in error_body(response)["message"]


def test_unknown_tenant_answers_403_like_another_tenant(admin):
    unknown_id = uuid.uuid4()
    other = TenantFactory()

    unknown = admin.acting_for(str(unknown_id)).get(STATUS)
    others = admin.acting_for(other).get(STATUS)

    assert unknown.status_code == others.status_code == 403
    assert error_body(unknown)["message"] == f"You are not a member of tenant {unknown_id}."


def test_member_can_read_everything(member, mapping):
    paths = [STATUS, MAPPINGS, mapping_url(mapping), runs_url(mapping)]

    assert [member.get(path).status_code for path in paths] == [200] * 4


@pytest.mark.parametrize("path_of", [lambda m: SYNC_ALL, sync_one_url])
def test_member_cannot_trigger_a_sync(member, mapping, fake_sabito, path_of):
    response = member.post(path_of(mapping), {"fullSync": True})

    assert response.status_code == 403
    assert "admins" in error_body(response)["message"]
    assert fake_sabito.requests == [] and not SyncRun.objects.exists()


def test_member_cannot_create_a_mapping(member):
    response = member.post(MAPPINGS, {"sabitoBusinessId": "biz-x", "businessName": "X"})

    assert response.status_code == 403
    assert not SabitoMapping.objects.exists()


def test_member_cannot_update_or_delete_a_mapping(member, mapping):
    updated = member.patch(mapping_url(mapping), {"businessName": "Mine now"})
    deleted = member.delete(mapping_url(mapping))

    assert updated.status_code == deleted.status_code == 403
    mapping.refresh_from_db()
    assert mapping.business_name == "iCreations Global"


def test_the_staff_flag_alone_grants_no_tenant(make_caller, fake_sabito):
    other_tenant = TenantFactory()
    mapping = SabitoMappingFactory(tenant=other_tenant, sabito_business_id="biz-other")
    staff = make_caller(other_tenant, role=None, staff=True)

    answers = [staff.get(STATUS), staff.get(MAPPINGS), staff.delete(mapping_url(mapping))]

    assert [response.status_code for response in answers] == [403, 403, 403]
    assert SabitoMapping.objects.filter(pk=mapping.pk).exists()


def test_a_staff_user_with_a_member_role_is_just_a_member(make_caller, tenant, mapping, fake_sabito):
    staff_member = make_caller(tenant, role=Membership.Role.MEMBER, staff=True)

    assert staff_member.get(STATUS).status_code == 200
    assert staff_member.post(sync_one_url(mapping), {"fullSync": False}).status_code == 403


def test_superuser_can_act_on_any_tenant_without_membership(make_caller, fake_sabito, inline_worker):
    other_tenant = TenantFactory()
    mapping = SabitoMappingFactory(tenant=other_tenant, sabito_business_id="biz-other")
    superuser = make_caller(other_tenant, role=None, is_superuser=True)

    status = superuser.get(STATUS)
    sync = superuser.post(sync_one_url(mapping), {"fullSync": False})

    assert status.status_code == 200 and [item["id"] for item in status.json()["data"]] == [str(mapping.pk)]
    assert sync.status_code == 200 and sync.json()["success"] is True


def test_operator_naming_a_missing_tenant_answers_403(operator):
    operator.acting_for(str(uuid.uuid4()))

    response = operator.get(STATUS)

    assert response.status_code == 403
    assert "There is no tenant" in error_body(response)["message"]


# --- Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", "true", "false", 1, 0, None, [], {}])
@pytest.mark.parametrize("path_of", [lambda m: SYNC_ALL, sync_one_url])
def test_full_sync_must_be_a_json_boolean(admin, mapping, fake_sabito, value, path_of):
    response = admin.post(path_of(mapping), {"fullSync": value})

    assert response.status_code == 400
    assert error_body(response)["errors"] == {"fullSync": ["Must be a JSON boolean: true or false."]}
    assert fake_sabito.requests == [] and not SyncRun.objects.exists()


def test_async_must_be_a_json_boolean(admin, mapping, fake_sabito):
    response = admin.post(SYNC_ALL, {"async": "yes"})

    assert response.status_code == 400
    assert "async" in error_body(response)["errors"]


def test_unknown_body_field_answers_400(admin, mapping, fake_sabito):
    response = admin.post(SYNC_ALL, {"fulSync": True})

    assert response.status_code == 400
    assert error_body(response)["errors"] == {"fulSync": ["Unknown field."]}
    assert error_body(response)["message"] == "fulSync: Unknown field."
    assert fake_sabito.requests == []


CONTROLLED_NAMES = ["Acme\n2026-12-07 ERROR forged", "Acme\x1b[2J", "Acme\rLtd", "Acme\n", "Acme\x85"]


@pytest.mark.parametrize("name", CONTROLLED_NAMES)
def test_a_name_with_control_characters_is_refused_when_connecting(operator, name):
    response = operator.post(MAPPINGS, {"sabitoBusinessId": "biz-new", "businessName": name})

    assert response.status_code == 400
    assert "control characters" in error_body(response)["errors"]["businessName"][0]
    assert not SabitoMapping.objects.filter(sabito_business_id="biz-new").exists()


@pytest.mark.parametrize("name", CONTROLLED_NAMES)
def test_a_name_with_control_characters_is_refused_when_renaming(admin, mapping, name):
    response = admin.patch(mapping_url(mapping), {"businessName": name})

    assert response.status_code == 400
    mapping.refresh_from_db()
    assert mapping.business_name != name


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "sync", b'{"fullSync": "yes"}'),
        ("POST", "sync", b'{"async": true, "fullSync": true}'),
        ("PATCH", "mapping", b'{"isActive": false}'),
    ],
)
def test_a_chunked_body_is_refused_with_411_never_read_as_empty(admin, mapping, fake_sabito, method, path, body):
    url = sync_one_url(mapping) if path == "sync" else mapping_url(mapping)
    # As a server hands over a chunked request: a Transfer-Encoding, no Content-Length.
    response = admin.client.generic(
        method, url, body, content_type="application/json", HTTP_TRANSFER_ENCODING="chunked", CONTENT_LENGTH=""
    )

    assert response.status_code == 411
    assert "Content-Length" in error_body(response)["message"]
    mapping.refresh_from_db()
    assert mapping.is_active and not SyncRun.objects.exists() and fake_sabito.requests == []


def test_a_body_of_many_thousand_keys_is_refused_by_its_count_in_a_small_answer(admin, mapping):
    body = {f"k{n}": 0 for n in range(150_000)}  # about 2 MB, under the upload limit

    response = admin.patch(mapping_url(mapping), body)

    assert response.status_code == 400
    assert error_body(response)["message"] == "The body has 150000 fields; at most 50 are accepted."
    assert len(response.content) < 1000
    mapping.refresh_from_db()
    assert mapping.business_name != "k0"


def test_an_error_names_a_few_unknown_fields_and_counts_the_rest(admin, mapping):
    response = admin.patch(mapping_url(mapping), {f"typo{n:02d}": True for n in range(30)})

    assert response.status_code == 400
    errors = error_body(response)["errors"]
    assert sorted(errors) == sorted([f"typo{n:02d}" for n in range(10)] + ["non_field_errors"])
    assert errors["non_field_errors"] == ["And 20 more unknown fields."]


@pytest.mark.parametrize(
    "raw",
    ['{"fullSync": tru', "", "[]", '"fullSync"', "null", '{"fullSync": NaN}', "[" * 100_000 + "]" * 100_000],
    ids=["truncated", "empty-string-body", "list", "string", "null", "nan", "deeply-nested"],
)
def test_malformed_json_answers_400(admin, mapping, fake_sabito, raw):
    response = admin.client.post(SYNC_ALL, raw, content_type="application/json")

    if raw == "":
        # No body at all is the default request: an incremental sync, queued (no worker runs here).
        assert response.status_code == 202
        return
    assert response.status_code == 400
    error_body(response)
    assert fake_sabito.requests == []


def test_form_body_answers_415(admin, mapping, fake_sabito):
    response = admin.client.post(SYNC_ALL, "fullSync=true", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    error_body(response)
    assert fake_sabito.requests == []


def test_body_without_content_type_answers_415(admin, mapping, fake_sabito):
    response = admin.client.generic("POST", SYNC_ALL, b'{"fullSync": true}', content_type="")

    assert response.status_code == 415
    assert fake_sabito.requests == []


def test_wrong_method_answers_405_with_the_error_body(admin):
    response = admin.client.put(MAPPINGS, {}, format="json")

    assert response.status_code == 405
    error_body(response)


@pytest.mark.project
def test_unhandled_error_on_an_api_path_answers_json_500(admin, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(SabitoMapping.objects, "filter", bug)
    admin.client.raise_request_exception = False

    response = admin.get(MAPPINGS)

    assert response.status_code == 500
    assert error_body(response)["message"].startswith("Internal server error")
    assert "a bug" not in response.content.decode()


@pytest.mark.project
def test_unknown_api_path_answers_json_404(admin):
    response = admin.get("/api/sabito/nothing-here")

    assert response.status_code == 404
    error_body(response)


@pytest.mark.project
def test_a_trailing_slash_answers_the_same_json_404_with_a_hint(admin):
    with_slash = admin.get(STATUS + "/")
    refused = admin.post(SYNC_ALL, {"fullSync": "yes"})

    assert with_slash.status_code == 404
    assert f"no trailing slash: try {STATUS}" in error_body(with_slash)["message"]
    # The same rendering as every other error (compact JSON), not a differently formatted body.
    assert with_slash.content.startswith(b'{"success":false,"message":') and refused.content.startswith(
        b'{"success":false,"message":'
    )


def test_a_body_over_the_upload_limit_answers_413_in_the_error_envelope(admin, settings, fake_sabito, caplog):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = admin.client.post(
        SYNC_ALL, data='{"fullSync": false, "pad": "' + "x" * 5000 + '"}', content_type="application/json"
    )

    assert response.status_code == 413
    assert "Request body too large: at most 1000 bytes" in error_body(response)["message"]
    assert not SyncRun.objects.exists()
    assert all(record.exc_info is None for record in caplog.records)


# --- Throttling -----------------------------------------------------------------------------------


@pytest.fixture
def sync_rate_of_two(settings):
    settings.SABITO_SYNC_THROTTLE = "2/minute"


def test_sync_endpoints_answer_429_after_the_rate(admin, mapping, fake_sabito, sync_rate_of_two, inline_worker):
    answers = [
        admin.post(SYNC_ALL, {"fullSync": False}).status_code,
        admin.post(sync_one_url(mapping), {"fullSync": False}).status_code,
    ]
    throttled = admin.post(SYNC_ALL, {"fullSync": False})

    assert answers == [200, 200]
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 0
    assert "throttled" in error_body(throttled)["message"]
    assert SyncRun.objects.count() == 2


def test_syncs_still_start_when_the_throttles_cache_server_is_down(admin, mapping, fake_sabito, caplog, inline_worker):
    from django.test import override_settings

    fake_sabito.records["biz-a"] = [sabito_record(1)]
    with override_settings(CACHES=UNREACHABLE_CACHES):
        response = admin.post(sync_one_url(mapping), {"fullSync": True})

    assert response.status_code == 200
    assert response.json()["data"][0]["created"] == 1
    assert "throttle skipped: the cache is unavailable" in caplog.text


def test_simultaneous_triggers_of_one_user_never_pass_the_rate(admin, settings, monkeypatch):
    """Eight requests of one user at once against a limit of five: exactly five pass,
    whatever the cache (Redis in one CI lane, the shared folder in the other). The
    cache's reads are slowed so that, counted without the lock, every request would
    read the history before any wrote it (all eight passed)."""
    import threading
    import time

    from django.core.cache import cache
    from rest_framework.test import APIRequestFactory, force_authenticate

    from sabito_sync.api.permissions import SyncTriggerThrottle

    settings.SABITO_SYNC_THROTTLE = "5/minute"
    read = cache.get

    def slow_read(*args, **kwargs):
        value = read(*args, **kwargs)
        time.sleep(0.05)
        return value

    monkeypatch.setattr(cache, "get", slow_read)
    request = APIRequestFactory().post("/api/sabito/sync")
    force_authenticate(request, user=admin.user)
    view = type("View", (), {"throttle_scope": "sabito_sync"})()
    start, allowed = threading.Barrier(8), []

    def trigger():
        from rest_framework.request import Request

        throttle = SyncTriggerThrottle()
        throttle.cache = cache
        start.wait()
        allowed.append(throttle.allow_request(Request(request), view))

    threads = [threading.Thread(target=trigger) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(allowed) == [False] * 3 + [True] * 5


def test_sync_throttle_is_per_user_and_spares_reads(
    admin, make_caller, tenant, mapping, fake_sabito, sync_rate_of_two, inline_worker
):
    other_admin = make_caller(tenant)
    for _ in range(2):
        admin.post(SYNC_ALL, {"fullSync": False})

    assert admin.get(STATUS).status_code == 200
    assert other_admin.post(SYNC_ALL, {"fullSync": False}).status_code == 200


def test_status_items_equal_the_status_serializers_output(tenant, mapping):
    from sabito_sync.api.serializers import SyncStatusSerializer
    from sabito_sync.models import SabitoMapping, SyncRun
    from sabito_sync.runs.queries import with_sync_running
    from sabito_sync.services.status import sync_status_items

    SabitoMappingFactory(tenant=tenant, metadata={"lastSyncedAt": 17, "lastSyncResult": ["hand", "edited"]})
    SabitoMappingFactory(tenant=tenant, metadata=["not", "a", "dict"], is_active=False)
    synced = SabitoMappingFactory(tenant=tenant)
    synced.metadata = {"lastSyncedAt": "2026-11-24T12:00:00.000Z", "lastSyncResult": {"success": True, "created": 5}}
    synced.save()
    SyncRun.objects.create(
        mapping=mapping, trigger="beat", started_at=mapping.created_at, heartbeat_at=mapping.created_at
    )
    mappings = with_sync_running(SabitoMapping.objects.filter(tenant=tenant).select_related("tenant"))

    assert sync_status_items(mappings) == SyncStatusSerializer(mappings, many=True).data
    assert [item["syncRunning"] for item in sync_status_items(mappings)].count(True) == 1


def test_without_redis_the_throttle_counts_are_shared_by_the_hosts_processes(settings):
    """Two gunicorn workers count the same requests: what one process stores, another reads."""
    import subprocess
    import sys

    from django.core.cache import cache

    if not settings.CACHES["default"]["BACKEND"].endswith("FileBasedCache"):
        pytest.skip("with Redis the counters are in Redis")
    cache.set("throttle_sabito_sync_42", ["a request"], 60)

    other_process = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.core.cache import cache; "
            "print(cache.get('throttle_sabito_sync_42'))",
        ],
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "nexpro.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert other_process.stdout.strip() == "['a request']", other_process.stderr
