"""Tenant isolation (OWASP API1): tenant A's admin can neither see, sync, change,
delete nor read the history of tenant B's mappings, by list or by id, and B's ids
answer exactly as ids that do not exist."""

import uuid

import pytest

from sabito_sync.models import Customer, Membership, SabitoMapping, SyncRun
from tests.api_fixtures import (  # noqa: F401 (fixtures)
    MAPPINGS,
    STATUS,
    SYNC_ALL,
    error_body,
    finished_run,
    fresh_throttle_history,
    grant,
    inline_worker,
    make_caller,
    mapping_url,
    queued_run,
    run_url,
    runs_url,
    sync_one_url,
)
from tests.factories import SabitoMappingFactory, TenantFactory, sabito_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenant_a(db):
    return TenantFactory(name="Tenant A")


@pytest.fixture
def tenant_b(db):
    return TenantFactory(name="Tenant B")


@pytest.fixture
def a_admin(make_caller, tenant_a):
    return make_caller(tenant_a)


@pytest.fixture
def a_mapping(tenant_a):
    return SabitoMappingFactory(tenant=tenant_a, sabito_business_id="biz-a", business_name="A business")


@pytest.fixture
def b_mapping(tenant_b, fake_sabito):
    mapping = SabitoMappingFactory(tenant=tenant_b, sabito_business_id="biz-b", business_name="B business")
    finished_run(mapping)
    return mapping


def missing_id() -> str:
    return str(uuid.uuid4())


def test_status_lists_only_the_header_tenants_mappings(a_admin, a_mapping, b_mapping):
    data = a_admin.get(STATUS).json()["data"]

    assert [item["id"] for item in data] == [str(a_mapping.pk)]


def test_mapping_list_shows_only_the_header_tenants_mappings(a_admin, a_mapping, b_mapping):
    data = a_admin.get(MAPPINGS).json()["data"]

    assert [item["id"] for item in data] == [str(a_mapping.pk)]


@pytest.mark.parametrize(
    "method,url_of,body",
    [
        ("get", mapping_url, None),
        ("patch", mapping_url, {"businessName": "Taken over"}),
        ("delete", mapping_url, None),
        ("get", runs_url, None),
        ("post", sync_one_url, {"fullSync": True}),
    ],
    ids=["retrieve", "update", "delete", "runs", "sync"],
)
def test_another_tenants_mapping_answers_exactly_like_a_missing_one(
    a_admin, b_mapping, fake_sabito, method, url_of, body
):
    def call(target):
        args = (url_of(target),) if body is None else (url_of(target), body)
        return getattr(a_admin, method)(*args)

    if method == "delete":
        grant(
            a_admin.user, "delete_sabitomapping"
        )  # deleting is an operator's; operators too act in one tenant per request
    theirs = call(b_mapping)
    missing = call(missing_id())

    assert theirs.status_code == missing.status_code == 404
    assert theirs.content == missing.content
    assert error_body(theirs)["message"] == "Sabito mapping not found."


def test_another_tenants_mapping_is_left_untouched(a_admin, b_mapping, fake_sabito, inline_worker):
    a_admin.patch(mapping_url(b_mapping), {"businessName": "Taken over", "isActive": False})
    a_admin.delete(mapping_url(b_mapping))
    a_admin.post(sync_one_url(b_mapping), {"fullSync": True})

    b_mapping.refresh_from_db()
    assert (b_mapping.business_name, b_mapping.is_active) == ("B business", True)
    assert SyncRun.objects.filter(mapping=b_mapping).count() == 1  # only the fixture's run
    assert fake_sabito.requests == []


def test_sync_all_syncs_only_the_header_tenants_mappings(a_admin, a_mapping, b_mapping, fake_sabito, inline_worker):
    fake_sabito.records["biz-a"] = [sabito_record(1)]
    fake_sabito.records["biz-b"] = [sabito_record(2)]

    data = a_admin.post(SYNC_ALL, {"fullSync": True}).json()["data"]

    assert [item["businessId"] for item in data] == ["biz-a"]
    assert {request["businessId"] for request in fake_sabito.requests} == {"biz-a"}
    assert not Customer.objects.filter(tenant=b_mapping.tenant).exists()


def test_creating_a_mapping_for_another_tenants_business_does_not_reveal_the_tenant(a_admin, b_mapping):
    response = a_admin.post(MAPPINGS, {"sabitoBusinessId": "biz-b", "businessName": "Mine"})

    assert response.status_code == 403
    text = response.content.decode()
    assert "already mapped" not in text
    assert "Tenant B" not in text and str(b_mapping.tenant_id) not in text
    assert SabitoMapping.objects.get(sabito_business_id="biz-b").tenant == b_mapping.tenant


def test_guessed_ids_all_answer_404(a_admin, b_mapping):
    guesses = [missing_id() for _ in range(20)] + [str(b_mapping.pk)]

    assert {a_admin.get(mapping_url(guess)).status_code for guess in guesses} == {404}


def test_naming_another_tenant_in_the_header_answers_403_everywhere(
    a_admin, tenant_b, b_mapping, fake_sabito, inline_worker
):
    a_admin.acting_for(tenant_b)

    answers = [
        a_admin.get(STATUS),
        a_admin.get(MAPPINGS),
        a_admin.get(mapping_url(b_mapping)),
        a_admin.get(runs_url(b_mapping)),
        a_admin.post(SYNC_ALL, {"fullSync": True}),
        a_admin.post(sync_one_url(b_mapping), {"fullSync": True}),
        a_admin.post(MAPPINGS, {"sabitoBusinessId": "biz-new", "businessName": "New"}),
        a_admin.patch(mapping_url(b_mapping), {"businessName": "Taken over"}),
        a_admin.delete(mapping_url(b_mapping)),
    ]

    assert [response.status_code for response in answers] == [403] * len(answers)
    assert fake_sabito.requests == []
    assert SabitoMapping.objects.filter(tenant=tenant_b).count() == 1


def test_swapping_the_header_between_requests_follows_the_role_in_each_tenant(
    make_caller, tenant_a, tenant_b, a_mapping, b_mapping, fake_sabito, inline_worker
):
    """Admin of A, member of B: each request is judged by the tenant it names."""
    caller = make_caller(tenant_a)
    Membership.objects.create(user=caller.user, tenant=tenant_b, role=Membership.Role.MEMBER)

    in_a = caller.post(sync_one_url(a_mapping), {"fullSync": True})
    b_reads = caller.acting_for(tenant_b).get(MAPPINGS)
    in_b = caller.post(sync_one_url(b_mapping), {"fullSync": True})
    a_by_way_of_b = caller.get(mapping_url(a_mapping))
    back_in_a = caller.acting_for(tenant_a).get(MAPPINGS)

    assert in_a.status_code == 200
    assert [item["id"] for item in b_reads.json()["data"]] == [str(b_mapping.pk)]
    assert in_b.status_code == 403
    assert a_by_way_of_b.status_code == 404
    assert [item["id"] for item in back_in_a.json()["data"]] == [str(a_mapping.pk)]


@pytest.mark.parametrize("method,suffix", [("get", ""), ("post", "/cancel")], ids=["retrieve", "cancel"])
def test_another_tenants_run_answers_exactly_like_a_missing_one(a_admin, b_mapping, method, suffix):
    theirs_run = queued_run(b_mapping)

    theirs = getattr(a_admin, method)(run_url(theirs_run) + suffix)
    missing = getattr(a_admin, method)(run_url(missing_id()) + suffix)

    assert theirs.status_code == missing.status_code == 404
    assert theirs.content == missing.content
    assert SyncRun.objects.get(pk=theirs_run.pk).status == SyncRun.Status.QUEUED
