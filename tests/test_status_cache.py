"""The status endpoint answers from a cache: every change still shows on the next request."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings
from django.utils import timezone

from sabito_sync.engine.sync import sync_mapping
from sabito_sync.models import SabitoMapping, SyncRun
from sabito_sync.services import status as status_module
from tests.api_fixtures import (  # noqa: F401 (fixtures)
    MAPPINGS,
    STATUS,
    UNREACHABLE_CACHES,
    admin,
    fresh_throttle_history,
    grant,
    make_caller,
    mapping_url,
    running_run,
    tenant,
)
from tests.factories import SabitoMappingFactory, sabito_record


@pytest.fixture
def mapping(tenant):
    return SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-a", business_name="Alpha")


def status_items(caller) -> dict[str, dict]:
    response = caller.get(STATUS)
    assert response.status_code == 200
    return {item["sabitoBusinessId"]: item for item in response.json()["data"]}


def test_a_finished_sync_shows_at_once(admin, mapping, fake_sabito):
    assert status_items(admin)["biz-a"]["lastSyncResult"] is None
    fake_sabito.records["biz-a"] = [sabito_record(1)]

    sync_mapping(mapping=mapping, full_sync=True)

    result = status_items(admin)["biz-a"]["lastSyncResult"]
    assert result is not None and result["created"] == 1


def test_a_started_and_a_stopped_run_show_at_once(admin, mapping):
    assert status_items(admin)["biz-a"]["syncRunning"] is False

    run = running_run(mapping)
    assert status_items(admin)["biz-a"]["syncRunning"] is True

    # Even a run ended by a bare update that leaves the mapping alone.
    SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.FAILED, finished_at=timezone.now())
    assert status_items(admin)["biz-a"]["syncRunning"] is False


def test_one_mapping_stopping_as_another_starts_shows_at_once(admin, tenant, mapping):
    other = SabitoMappingFactory(tenant=tenant, sabito_business_id="biz-b")
    run = running_run(mapping)
    assert [status_items(admin)[key]["syncRunning"] for key in ("biz-a", "biz-b")] == [True, False]

    SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.FAILED, finished_at=timezone.now())
    running_run(other)

    assert [status_items(admin)[key]["syncRunning"] for key in ("biz-a", "biz-b")] == [False, True]


def test_mapping_changes_through_the_api_show_at_once(admin, mapping):
    grant(admin.user, "add_sabitomapping", "delete_sabitomapping")
    assert status_items(admin)["biz-a"]["businessName"] == "Alpha"

    admin.patch(mapping_url(mapping), {"businessName": "Alpha Two", "isActive": False})
    item = status_items(admin)["biz-a"]
    assert (item["businessName"], item["isActive"]) == ("Alpha Two", False)

    admin.post(MAPPINGS, {"sabitoBusinessId": "biz-new", "businessName": "New"})
    assert set(status_items(admin)) == {"biz-a", "biz-new"}

    admin.delete(mapping_url(mapping))
    assert set(status_items(admin)) == {"biz-new"}


def test_a_renamed_tenant_shows_at_once(admin, tenant, mapping):
    assert status_items(admin)["biz-a"]["tenantName"] == "My Tenant"

    tenant.name = "Renamed Tenant"
    tenant.save()

    assert status_items(admin)["biz-a"]["tenantName"] == "Renamed Tenant"


def test_tenants_do_not_share_an_answer(admin, make_caller, mapping):
    other_tenant_admin = make_caller()
    SabitoMappingFactory(tenant=other_tenant_admin.tenant, sabito_business_id="biz-other")

    assert set(status_items(admin)) == {"biz-a"}
    assert set(status_items(other_tenant_admin)) == {"biz-other"}


def test_a_repeated_request_is_answered_from_the_cache(admin, tenant, django_assert_num_queries):
    for _n in range(5):
        SabitoMappingFactory(tenant=tenant)
    # The token with its user, the membership with its tenant, the cache key's
    # fingerprint, then (not cached yet) the mappings with their running flag.
    with django_assert_num_queries(4):
        first = admin.get(STATUS)
    with django_assert_num_queries(3):
        second = admin.get(STATUS)

    assert second.content == first.content
    assert second["Content-Type"] == "application/json"


def test_a_change_the_fingerprint_cannot_see_shows_once_the_entry_expires(admin, mapping, monkeypatch):
    monkeypatch.setattr(status_module, "STATUS_CACHE_SECONDS", 1)
    assert status_items(admin)["biz-a"]["businessName"] == "Alpha"

    # A bare update that leaves `updated_at` alone: invisible to the fingerprint.
    SabitoMapping.objects.filter(pk=mapping.pk).update(business_name="Edited in a shell")
    assert status_items(admin)["biz-a"]["businessName"] == "Alpha"

    time.sleep(1.2)
    assert status_items(admin)["biz-a"]["businessName"] == "Edited in a shell"


def test_status_answers_when_the_cache_server_is_down(admin, mapping):
    with override_settings(CACHES=UNREACHABLE_CACHES):
        assert status_items(admin)["biz-a"]["businessName"] == "Alpha"


def test_the_browsable_api_still_renders_the_status(admin, mapping, monkeypatch):
    from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer

    from sabito_sync.api.views import SyncStatusApi

    # What DEBUG turns on: a browser asking for HTML gets DRF's page.
    monkeypatch.setattr(SyncStatusApi, "renderer_classes", [JSONRenderer, BrowsableAPIRenderer])

    response = admin.get(STATUS, HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "biz-a" in response.content.decode()
