"""The mapping rules of `sabito_sync.services.mappings`, met the way an operator or an attacker
meets them: re-pointing a mapping resets its watermark (and the history says why),
deleting or re-pointing waits for a running sync, and the admin and the API agree
on what "running" means."""

from datetime import timedelta

import pytest
from django.contrib import admin as django_admin
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from sabito_sync.engine.sync import sync_mapping
from sabito_sync.models import Customer, SabitoMapping, SyncRun
from tests.api_fixtures import (  # noqa: F401 (fixtures)
    STATUS,
    admin,
    error_body,
    fresh_throttle_history,
    inline_worker,
    make_caller,
    mapping_url,
    operator,
    runs_url,
    sync_one_url,
    tenant,
)
from tests.factories import CustomerFactory, SabitoMappingFactory, TenantFactory, sabito_record

pytestmark = pytest.mark.django_db

WATERMARK = "2026-11-30T12:00:00.000Z"


@pytest.fixture
def mapping(tenant):
    return SabitoMappingFactory(
        tenant=tenant,
        sabito_business_id="biz-a",
        business_name="Alpha",
        metadata={"lastSyncedAt": WATERMARK, "lastSyncResult": {"success": True, "created": 3}},
    )


def live_run(mapping) -> SyncRun:
    now = timezone.now()
    return SyncRun.objects.create(mapping=mapping, trigger=SyncRun.Trigger.BEAT, started_at=now, heartbeat_at=now)


def stale_run(mapping) -> SyncRun:
    long_ago = timezone.now() - timedelta(hours=2)
    return SyncRun.objects.create(
        mapping=mapping, trigger=SyncRun.Trigger.BEAT, started_at=long_ago, heartbeat_at=long_ago
    )


# --- Re-pointing ---------------------------------------------------------------------------


def test_repointing_resets_the_watermark_and_the_next_sync_fetches_everything(
    admin, operator, mapping, fake_sabito, inline_worker
):
    gone = CustomerFactory(
        tenant=mapping.tenant,
        sabito_business_id="biz-a",
        sabito_customer_id="old-1",
        sabito_missing_since=timezone.now(),
    )
    fake_sabito.records["biz-b"] = [sabito_record(1)]

    response = operator.patch(mapping_url(mapping), {"sabitoBusinessId": "biz-b"})
    assert response.status_code == 200 and response.json()["data"]["sabitoBusinessId"] == "biz-b"
    mapping.refresh_from_db()
    assert "lastSyncedAt" not in mapping.metadata
    gone.refresh_from_db()
    assert gone.sabito_missing_since is None

    first = admin.post(sync_one_url(mapping), {"fullSync": False})
    second = admin.post(sync_one_url(mapping), {"fullSync": False})

    assert first.json()["success"] is True and second.json()["success"] is True
    first_sync = [request for request in fake_sabito.requests if "updatedAfter" not in request]
    assert first_sync and {request["businessId"] for request in fake_sabito.requests} == {"biz-b"}
    assert fake_sabito.requests[: len(first_sync)] == first_sync  # the first sync asked without a watermark
    assert len(first_sync) < len(fake_sabito.requests)  # the second one with it
    newest, oldest = admin.get(runs_url(mapping)).json()["data"]
    assert "Re-pointed from business 'biz-a'" in oldest["note"] and "'biz-b'" in oldest["note"]
    assert newest["note"] is None
    mapping.refresh_from_db()
    assert mapping.watermark_reset_reason == "" and "watermarkReset" not in mapping.metadata


def test_a_failed_first_sync_after_a_repoint_keeps_the_reason_for_the_next(
    admin, operator, mapping, fake_sabito, inline_worker
):
    operator.patch(mapping_url(mapping), {"sabitoBusinessId": "biz-b"})
    fake_sabito.answer_next(503, times=10)

    admin.post(sync_one_url(mapping), {"fullSync": False})
    admin.post(sync_one_url(mapping), {"fullSync": False})

    notes = [run["note"] for run in admin.get(runs_url(mapping)).json()["data"]]
    assert len(notes) == 2 and all("Re-pointed" in note for note in notes)


def test_moving_a_mapping_to_another_tenant_takes_it_out_of_the_old_one(admin, operator, mapping):
    elsewhere = TenantFactory(name="Elsewhere")

    response = operator.patch(mapping_url(mapping), {"tenantId": str(elsewhere.pk)})

    assert response.status_code == 200 and response.json()["data"]["tenantId"] == str(elsewhere.pk)
    assert admin.get(mapping_url(mapping)).status_code == 404
    mapping.refresh_from_db()
    assert mapping.tenant == elsewhere and mapping.last_synced_at is None


def test_renaming_or_pausing_keeps_the_watermark(admin, mapping):
    admin.patch(mapping_url(mapping), {"businessName": "Alpha Two", "isActive": False})

    mapping.refresh_from_db()
    assert mapping.metadata["lastSyncedAt"] == WATERMARK


@pytest.mark.parametrize("field,value", [("sabitoBusinessId", "biz-b"), ("tenantId", None)])
def test_a_tenant_admin_cannot_repoint_a_mapping(admin, mapping, field, value):
    value = value or str(TenantFactory().pk)

    response = admin.patch(mapping_url(mapping), {field: value})

    assert response.status_code == 403
    assert "platform operators" in error_body(response)["message"]
    mapping.refresh_from_db()
    assert (mapping.sabito_business_id, mapping.metadata["lastSyncedAt"]) == ("biz-a", WATERMARK)


def test_a_tenant_admin_naming_a_missing_tenant_learns_nothing(admin, mapping):
    existing = admin.patch(mapping_url(mapping), {"tenantId": str(TenantFactory().pk)})
    missing = admin.patch(mapping_url(mapping), {"tenantId": "00000000-0000-0000-0000-000000000001"})

    assert existing.status_code == missing.status_code == 403
    assert existing.content == missing.content


def test_an_operator_moving_a_mapping_to_a_missing_tenant_answers_400(operator, mapping):
    response = operator.patch(mapping_url(mapping), {"tenantId": "00000000-0000-0000-0000-000000000001"})

    assert response.status_code == 400
    assert "There is no tenant" in error_body(response)["errors"]["tenantId"][0]


def test_repointing_at_an_already_mapped_business_names_the_holder(operator, mapping):
    holder = SabitoMappingFactory(tenant=TenantFactory(name="Holder"), sabito_business_id="biz-taken")

    response = operator.patch(mapping_url(mapping), {"sabitoBusinessId": "biz-taken"})

    assert response.status_code == 400
    assert f"already mapped to tenant Holder (mapping {holder.pk})" in error_body(response)["message"]
    mapping.refresh_from_db()
    assert (mapping.sabito_business_id, mapping.metadata["lastSyncedAt"]) == ("biz-a", WATERMARK)


def test_repointing_while_a_sync_runs_answers_409_and_changes_nothing(operator, mapping):
    live_run(mapping)

    response = operator.patch(mapping_url(mapping), {"sabitoBusinessId": "biz-b"})

    assert response.status_code == 409
    assert "running" in error_body(response)["message"]
    mapping.refresh_from_db()
    assert (mapping.sabito_business_id, mapping.metadata["lastSyncedAt"]) == ("biz-a", WATERMARK)


def test_a_run_that_started_before_a_repoint_does_not_store_its_watermark(mapping, fake_sabito):
    fake_sabito.records["biz-a"] = [sabito_record(1)]
    SabitoMapping.objects.filter(pk=mapping.pk).update(metadata={})

    def repoint_meanwhile(result):
        # What a re-point landing between this run's start and its end looks like.
        SabitoMapping.objects.filter(pk=mapping.pk).update(sabito_business_id="biz-b")

    result = sync_mapping(mapping=mapping, on_page=repoint_meanwhile)

    assert result.success
    stored = SabitoMapping.objects.get(pk=mapping.pk)
    assert "lastSyncedAt" not in stored.metadata and stored.metadata["lastSyncResult"]["success"] is True


def test_the_admin_form_repoints_through_the_same_rule(admin_client, mapping):
    form = {
        "business_name": "Alpha",
        "sabito_business_id": "biz-b",
        "tenant": str(mapping.tenant_id),
        "is_active": "on",
    }

    response = admin_client.post(reverse("admin:sabito_sync_sabitomapping_change", args=[mapping.pk]), form)

    assert response.status_code == 302
    mapping.refresh_from_db()
    assert mapping.sabito_business_id == "biz-b" and mapping.last_synced_at is None
    assert "Re-pointed from business 'biz-a'" in mapping.watermark_reset_reason


def test_the_admin_form_refuses_a_repoint_while_a_sync_runs(admin_client, mapping):
    live_run(mapping)
    form = {
        "business_name": "Alpha",
        "sabito_business_id": "biz-b",
        "tenant": str(mapping.tenant_id),
        "is_active": "on",
    }

    response = admin_client.post(reverse("admin:sabito_sync_sabitomapping_change", args=[mapping.pk]), form)

    assert response.status_code == 200  # the form again, with the error
    assert "A sync of Alpha is running" in response.content.decode()
    mapping.refresh_from_db()
    assert (mapping.sabito_business_id, mapping.metadata["lastSyncedAt"]) == ("biz-a", WATERMARK)


# --- Deleting and "running": the admin and the API agree ------------------------------------


def admin_says_running(admin_client, mapping) -> bool:
    html = admin_client.get(reverse("admin:sabito_sync_sabitomapping_changelist")).content.decode()
    return 'sabito-badge--running">Running' in html


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.mark.parametrize("make_run,running", [(live_run, True), (stale_run, False), (None, False)])
def test_the_admin_and_the_api_agree_on_running(admin_client, admin, mapping, make_run, running):
    if make_run:
        make_run(mapping)

    [status_item] = admin.get(STATUS).json()["data"]

    assert status_item["syncRunning"] is running
    assert admin_says_running(admin_client, mapping) is running


@pytest.mark.parametrize("make_run,refused", [(live_run, True), (stale_run, False)])
def test_deleting_through_the_api_waits_for_a_live_run_only(operator, mapping, make_run, refused):
    make_run(mapping)

    response = operator.delete(mapping_url(mapping))

    assert response.status_code == (409 if refused else 200)
    assert SabitoMapping.objects.filter(pk=mapping.pk).exists() is refused


@pytest.mark.parametrize("make_run,refused", [(live_run, True), (stale_run, False)])
def test_deleting_in_the_admin_waits_for_a_live_run_only(admin_client, mapping, make_run, refused):
    make_run(mapping)

    response = admin_client.post(reverse("admin:sabito_sync_sabitomapping_delete", args=[mapping.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert SabitoMapping.objects.filter(pk=mapping.pk).exists() is refused
    if refused:
        assert any("A sync of Alpha is running" in text for text in messages_of(response))


def test_the_admin_delete_page_says_why_while_a_sync_runs(admin_client, mapping):
    live_run(mapping)

    response = admin_client.get(reverse("admin:sabito_sync_sabitomapping_delete", args=[mapping.pk]), follow=True)

    assert "A sync of Alpha is running; delete the Sabito mapping" in response.content.decode()


def test_the_admin_bulk_delete_refuses_while_any_selected_mapping_syncs(admin_client, mapping):
    idle = SabitoMappingFactory(tenant=mapping.tenant, sabito_business_id="biz-idle", business_name="Idle")
    live_run(mapping)

    response = admin_client.post(
        reverse("admin:sabito_sync_sabitomapping_changelist"),
        {"action": "delete_selected", "post": "yes", django_admin.helpers.ACTION_CHECKBOX_NAME: [mapping.pk, idle.pk]},
    )

    assert response.status_code == 302
    assert SabitoMapping.objects.count() == 2
    assert any("A sync of Alpha is running" in text for text in messages_of(response))


def test_the_admin_bulk_delete_deletes_when_nothing_syncs(admin_client, mapping):
    response = admin_client.post(
        reverse("admin:sabito_sync_sabitomapping_changelist"),
        {"action": "delete_selected", "post": "yes", django_admin.helpers.ACTION_CHECKBOX_NAME: [mapping.pk]},
    )

    assert response.status_code == 302
    assert not SabitoMapping.objects.exists()


def test_a_tenant_whose_mapping_syncs_cannot_be_deleted(admin_client, mapping):
    live_run(mapping)

    response = admin_client.post(reverse("admin:sabito_sync_tenant_delete", args=[mapping.tenant_id]), {"post": "yes"})

    assert response.status_code == 302
    assert SabitoMapping.objects.filter(pk=mapping.pk).exists()
    assert any("A sync of Alpha is running" in text for text in messages_of(response))


def test_deleting_a_mapping_keeps_its_customers(operator, mapping):
    CustomerFactory(tenant=mapping.tenant, sabito_business_id="biz-a", sabito_customer_id="c-1")

    operator.delete(mapping_url(mapping))

    assert Customer.objects.filter(sabito_customer_id="c-1").exists()


def test_a_tenant_admin_pauses_and_resumes_through_the_service_and_a_member_may_not(make_caller, mapping):
    from sabito_sync.models import Membership
    from sabito_sync.services.access import ActionRefused
    from sabito_sync.services.mappings import set_mapping_active

    admin_user = make_caller(mapping.tenant).user
    member_user = make_caller(mapping.tenant, role=Membership.Role.MEMBER).user

    set_mapping_active(actor=admin_user, mapping=mapping, active=False)
    mapping.refresh_from_db()
    assert mapping.is_active is False and mapping.metadata["lastSyncedAt"] == WATERMARK
    with pytest.raises(ActionRefused, match="Only admins of this tenant"):
        set_mapping_active(actor=member_user, mapping=mapping, active=True)
    set_mapping_active(actor=admin_user, mapping=mapping, active=True)
    mapping.refresh_from_db()
    assert mapping.is_active is True
