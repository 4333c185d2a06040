"""The API over real HTTP: a running server (pytest-django's `live_server`),
`requests` as the client, Sabito faked at its HTTP boundary."""

import pytest
import requests
import responses

from tests.api_fixtures import fresh_throttle_history, make_caller  # noqa: F401 (fixtures)
from tests.conftest import FakeSabito
from tests.factories import SabitoMappingFactory, sabito_record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture
def fake_sabito_beside(live_server):
    """`fake_sabito`, letting the test's own requests through to the live server
    (`responses` intercepts every `requests` call in the process)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False, passthru_prefixes=(live_server.url,)) as mock:
        yield FakeSabito(mock)


@pytest.fixture
def session(make_caller):
    caller = make_caller()
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {caller.token.key}", "X-Tenant-ID": str(caller.tenant.pk)})
    session.tenant = caller.tenant
    with session:
        yield session


def test_sync_then_status_over_http(live_server, fake_sabito_beside, session):
    mapping = SabitoMappingFactory(tenant=session.tenant, sabito_business_id="biz-http", business_name="Over HTTP")
    fake_sabito_beside.records["biz-http"] = [sabito_record(1), sabito_record(2)]

    sync = session.post(f"{live_server.url}/api/sabito/sync", json={"fullSync": True}, timeout=30)
    status = session.get(f"{live_server.url}/api/sabito/sync/status", timeout=30)

    assert sync.status_code == 200
    assert sync.headers["Content-Type"] == "application/json"
    assert sync.json() == {
        "success": True,
        "message": "Sync completed",
        "data": [
            {
                "success": True,
                "businessId": "biz-http",
                "customersProcessed": 2,
                "created": 2,
                "updated": 0,
                "skipped": 0,
                "errors": 0,
                "errorDetails": [],
            }
        ],
    }
    [item] = status.json()["data"]
    assert item["id"] == str(mapping.pk)
    assert item["lastSyncResult"]["created"] == 2
    assert item["lastSyncAt"] is not None and item["syncRunning"] is False


def test_missing_token_over_http_answers_401_json(live_server, session):
    response = requests.get(
        f"{live_server.url}/api/sabito/sync/status", headers={"X-Tenant-ID": str(session.tenant.pk)}, timeout=30
    )

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["success"] is False
