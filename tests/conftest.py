import json
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

SABITO_TEST_URL = "https://sabito.test"
SABITO_TEST_KEY = "test-key-5f0c2a"


@pytest.fixture(autouse=True)
def sabito_test_settings(settings):
    """Point the sync at a fake Sabito and make retries immediate."""
    settings.SABITO_API_URL = SABITO_TEST_URL
    settings.SABITO_API_KEY = SABITO_TEST_KEY
    settings.SABITO_MAX_RETRIES = "2"
    settings.SABITO_RETRY_BACKOFF = "0"
    settings.SABITO_SYNC_OVERLAP = "300"
    return settings


class FakeSabito:
    """Sabito's `GET /api/customers` over `responses`: pages a list of records per
    business by limit/offset, optionally capping the page size, and remembers
    every request's query so tests can assert what was asked."""

    def __init__(self, mock: responses.RequestsMock):
        self.records: dict[str, list] = {}
        self.requests: list[dict] = []
        self.page_cap: int | None = None
        # (status, body) answers served before any page, one per request.
        self.queued_answers: list[tuple[int, str]] = []
        # offset → body served instead of the page at that offset.
        self.bodies_at_offset: dict[int, str] = {}
        self.mock = mock
        mock.add_callback(responses.GET, f"{SABITO_TEST_URL}/api/customers", callback=self.serve)

    def answer_next(self, status: int, body: str = '{"error": "boom"}', *, times: int = 1) -> None:
        self.queued_answers.extend([(status, body)] * times)

    def serve(self, request):
        query = {key: values[0] for key, values in parse_qs(urlsplit(request.url).query).items()}
        self.requests.append(query | {"X-API-Key": request.headers.get("X-API-Key")})
        if self.queued_answers:
            status, body = self.queued_answers.pop(0)
            return status, {"Content-Type": "application/json"}, body
        limit = int(query.get("limit", 100))
        if self.page_cap:
            limit = min(limit, self.page_cap)
        offset = int(query.get("offset", 0))
        if offset in self.bodies_at_offset:
            return 200, {"Content-Type": "application/json"}, self.bodies_at_offset[offset]
        page = self.records.get(query["businessId"], [])[offset : offset + limit]
        return 200, {"Content-Type": "application/json"}, json.dumps({"data": page})


@pytest.fixture
def fake_sabito():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeSabito(mock)
