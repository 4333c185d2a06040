"""The Sabito client against a faked HTTP boundary (`responses`); no Django, no database."""

from __future__ import annotations

import json
import logging
import pickle
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
import requests
import responses
from responses import matchers

from sabito_sync.engine.client import (
    CustomerPage,
    SabitoAuthError,
    SabitoClient,
    SabitoError,
    SabitoResponseError,
    SabitoUnavailableError,
    format_timestamp,
)

BASE_URL = "https://sabito.test"
CUSTOMERS_URL = f"{BASE_URL}/api/customers"
API_KEY = "sk-live-0123456789abcdef"
BUSINESS = "biz-123"


@pytest.fixture
def sabito_test_settings():
    """Stands in for conftest's Django settings fixture: the client knows nothing of Django,
    so its tests run without settings (and with `-p no:django`)."""


@pytest.fixture
def sabito():
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(sleeps):
    clients: list[SabitoClient] = []

    def make(**overrides) -> SabitoClient:
        options = {"base_url": BASE_URL, "api_key": API_KEY, "sleep": sleeps.append} | overrides
        client = SabitoClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def sabito_client(make_client) -> SabitoClient:
    return make_client()


def customers(*ids: str) -> dict:
    return {"data": [{"id": customer_id, "email": f"{customer_id}@example.com"} for customer_id in ids]}


def ids_from(start: int, count: int) -> list[str]:
    return [f"c{number}" for number in range(start, start + count)]


def requested_offset(request) -> int:
    return int(parse_qs(urlsplit(request.url).query)["offset"][0])


def requested_limit(request) -> int:
    return int(parse_qs(urlsplit(request.url).query)["limit"][0])


def offset_feed(ids: list[str], *, cap: int | None = None):
    """A callback serving `ids` by offset and limit, like Sabito; `ids` may be
    changed between requests to simulate edits while paging."""

    def serve(request):
        offset, limit = requested_offset(request), requested_limit(request)
        if cap:
            limit = min(limit, cap)
        return 200, {}, json.dumps(customers(*ids[offset : offset + limit]))

    return serve


def fetch_first_page(sabito_client: SabitoClient, *, offset: int = 0) -> CustomerPage:
    return sabito_client.fetch_customer_page(business_id=BUSINESS, updated_after=None, offset=offset, limit=100)


def assert_jittered(actual: float, base: float) -> None:
    assert base <= actual <= base * 1.1 + 1e-9


# --- what is sent -----------------------------------------------------------------


def test_sends_business_id_limit_offset_and_api_key_header(sabito, sabito_client):
    sabito.get(
        CUSTOMERS_URL,
        json=customers("c1"),
        match=[
            matchers.query_param_matcher({"businessId": BUSINESS, "limit": "25", "offset": "50"}),
            matchers.header_matcher({"X-API-Key": API_KEY, "Accept": "application/json"}),
        ],
    )

    page = sabito_client.fetch_customer_page(business_id=BUSINESS, updated_after=None, offset=50, limit=25)

    assert page == CustomerPage(offset=50, records=customers("c1")["data"])


def test_updated_after_is_sent_as_iso8601_utc(sabito, sabito_client):
    two_hours_east = timezone(timedelta(hours=2))
    moment = datetime(2025, 12, 14, 14, 0, 0, 123999, tzinfo=two_hours_east)
    sabito.get(
        CUSTOMERS_URL,
        json=customers(),
        match=[
            matchers.query_param_matcher(
                {"businessId": BUSINESS, "limit": "100", "offset": "0", "updatedAfter": "2025-12-14T12:00:00.123Z"}
            )
        ],
    )

    sabito_client.fetch_customer_page(business_id=BUSINESS, updated_after=moment, offset=0, limit=100)


def test_updated_after_omitted_on_full_fetch(sabito, sabito_client):
    sabito.get(
        CUSTOMERS_URL,
        json=customers(),
        match=[matchers.query_param_matcher({"businessId": BUSINESS, "limit": "100", "offset": "0"})],
    )

    assert list(sabito_client.iter_customer_pages(business_id=BUSINESS)) == []


def test_format_timestamp_truncates_to_milliseconds_with_z():
    moment = datetime(2025, 12, 14, 12, 0, 0, 999999, tzinfo=UTC)

    assert format_timestamp(moment) == "2025-12-14T12:00:00.999Z"


def test_format_timestamp_rejects_naive_datetime():
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2025, 12, 14, 12, 0))


def test_every_request_has_a_timeout(sabito, make_client):
    client = make_client(connect_timeout=2.5, read_timeout=12.0, retry_backoff=0)
    sabito.get(CUSTOMERS_URL, status=503)
    sabito.get(CUSTOMERS_URL, json=customers("c1"))
    sabito.get(CUSTOMERS_URL, json=customers("c1"))  # the overlapping re-read: nothing new, the end

    list(client.iter_customer_pages(business_id=BUSINESS))

    assert len(sabito.calls) == 3
    assert [call.request.req_kwargs["timeout"] for call in sabito.calls] == [(2.5, 12.0)] * 3


def test_a_borrowed_sessions_adapter_sends_every_request_with_the_timeout_and_follows_no_redirect():
    class SpyAdapter(requests.adapters.HTTPAdapter):
        def __init__(self):
            super().__init__()
            self.sent: list[dict] = []

        def send(self, request, **kwargs):
            self.sent.append(kwargs)
            return super().send(request, **kwargs)

    session = requests.Session()
    adapter = SpyAdapter()
    session.mount("https://", adapter)
    with responses.RequestsMock() as sabito:
        sabito.get(CUSTOMERS_URL, status=302, headers={"Location": "https://elsewhere.test/api/customers"})
        client = SabitoClient(base_url=BASE_URL, api_key=API_KEY, session=session, max_retries=0)
        with pytest.raises(SabitoResponseError, match="not followed"):
            fetch_first_page(client)

    assert len(adapter.sent) == 1
    assert adapter.sent[0]["timeout"] == (5.0, 30.0)


# --- paging -----------------------------------------------------------------------


def test_paging_with_a_capped_page_size_advances_by_records_received(sabito, make_client):
    client = make_client(page_size=100)
    sabito.add_callback(responses.GET, CUSTOMERS_URL, callback=offset_feed(ids_from(0, 90), cap=40))

    pages = list(client.iter_customer_pages(business_id=BUSINESS))

    assert [record["id"] for page in pages for record in page.records] == ids_from(0, 90)
    assert [page.offset for page in pages] == [0, 40, 70]
    # Each request re-reads the last 10 records it has (the overlap) and asks for
    # a page beyond them; the capped server sends 40 whatever is asked.
    assert [requested_offset(call.request) for call in sabito.calls] == [0, 30, 60, 80]
    assert [requested_limit(call.request) for call in sabito.calls] == [100, 110, 110, 110]


def test_paging_stops_when_a_window_brings_nothing_new(sabito, make_client):
    client = make_client(page_size=2)
    sabito.add_callback(responses.GET, CUSTOMERS_URL, callback=offset_feed(["c1", "c2"]))

    pages = list(client.iter_customer_pages(business_id=BUSINESS))

    assert [page.records for page in pages] == [customers("c1", "c2")["data"]]
    assert len(sabito.calls) == 2


def test_an_empty_feed_yields_no_pages(sabito, sabito_client):
    sabito.get(CUSTOMERS_URL, json=customers())

    assert list(sabito_client.iter_customer_pages(business_id=BUSINESS)) == []
    assert len(sabito.calls) == 1


def test_records_moving_to_the_end_while_paging_are_not_skipped(sabito, make_client):
    # Offset drift: after the first page, two records already read are edited and
    # move to the end of the updatedAt order, so everything after them moves back
    # by two. A plain pager asking for offset 10 would skip c10 and c11 for good.
    feed = ids_from(0, 30)
    client = make_client(page_size=10)

    def drifting(request):
        if len(sabito.calls) == 1:
            for moved in ("c2", "c5"):
                feed.remove(moved)
                feed.append(moved)
        return offset_feed(feed)(request)

    sabito.add_callback(responses.GET, CUSTOMERS_URL, callback=drifting)

    received = [record["id"] for page in client.iter_customer_pages(business_id=BUSINESS) for record in page.records]

    assert set(received) == set(ids_from(0, 30))
    # The two moved records come again at the end; the sync processes each once.
    assert sorted(received) == sorted([*ids_from(0, 30), "c2", "c5"])


def test_the_newest_record_read_being_edited_still_leaves_an_anchor(sabito, make_client):
    feed = ids_from(0, 20)
    client = make_client(page_size=10)

    def drifting(request):
        if len(sabito.calls) == 1:
            feed.remove("c9")  # the last record of the first page, edited: now at the end
            feed.append("c9")
        return offset_feed(feed)(request)

    sabito.add_callback(responses.GET, CUSTOMERS_URL, callback=drifting)

    received = [record["id"] for page in client.iter_customer_pages(business_id=BUSINESS) for record in page.records]

    assert set(received) == set(ids_from(0, 20))


def test_drift_beyond_the_overlap_re_reads_from_the_start(sabito, make_client, caplog):
    feed = ids_from(0, 40)
    client = make_client(page_size=10, overlap_records=3)

    def drifting(request):
        if len(sabito.calls) == 1:
            for moved in ids_from(0, 10):  # every record of the first page edited
                feed.remove(moved)
                feed.append(moved)
        return offset_feed(feed)(request)

    sabito.add_callback(responses.GET, CUSTOMERS_URL, callback=drifting)

    received = [record["id"] for page in client.iter_customer_pages(business_id=BUSINESS) for record in page.records]

    assert set(received) == set(ids_from(0, 40))
    assert "re-reading from the start" in caplog.text


def test_a_feed_that_never_settles_gives_up_after_bounded_restarts(sabito, make_client):
    feed = ids_from(0, 40)
    client = make_client(page_size=10, overlap_records=3, max_restarts=2)

    def churning(request):
        first = feed[:10]
        del feed[:10]
        feed.extend(first)  # every read moves what was read to the end
        return offset_feed(feed)(request)

    sabito.add_callback(responses.GET, CUSTOMERS_URL, callback=churning)

    with pytest.raises(SabitoResponseError, match="kept changing order while being paged"):
        list(client.iter_customer_pages(business_id=BUSINESS))


def test_every_page_request_repeats_the_updated_after_filter(sabito, sabito_client):
    moment = datetime(2025, 12, 14, 12, 0, tzinfo=UTC)
    only_changed = matchers.query_param_matcher({"updatedAfter": "2025-12-14T12:00:00.000Z"}, strict_match=False)
    sabito.get(CUSTOMERS_URL, json=customers("c1"), match=[only_changed])
    sabito.get(CUSTOMERS_URL, json=customers(), match=[only_changed])

    pages = list(sabito_client.iter_customer_pages(business_id=BUSINESS, updated_after=moment))

    assert len(pages) == 1


def test_same_page_twice_is_detected(sabito, sabito_client):
    sabito.get(CUSTOMERS_URL, json=customers("c1", "c2"))  # a server that ignores offset

    pages = sabito_client.iter_customer_pages(business_id=BUSINESS)
    first = next(pages)
    with pytest.raises(SabitoResponseError, match="served the same page twice") as caught:
        next(pages)

    assert first.offset == 0
    assert f"for business {BUSINESS}: offset 1 returned" in str(caught.value)  # asked from 1, re-reading the overlap
    assert len(sabito.calls) == 2


def test_page_bound_stops_endless_feed(sabito, make_client):
    client = make_client(page_size=10, max_pages=3)

    def endless_feed(request):
        offset = requested_offset(request)
        return 200, {}, json.dumps(customers(*ids_from(offset, requested_limit(request))))

    sabito.add_callback(responses.GET, CUSTOMERS_URL, callback=endless_feed)

    received = []
    with pytest.raises(SabitoResponseError, match="did not end within 3 pages") as caught:
        for page in client.iter_customer_pages(business_id=BUSINESS):
            received.append(page.offset)

    assert received == [0, 10, 20]
    assert "still returning records at offset 30" in str(caught.value)
    assert not caught.value.retryable


def test_feed_ending_exactly_at_the_page_bound_succeeds(sabito, make_client):
    client = make_client(page_size=1, max_pages=2)
    sabito.add_callback(responses.GET, CUSTOMERS_URL, callback=offset_feed(["c1", "c2"]))

    assert len(list(client.iter_customer_pages(business_id=BUSINESS))) == 2


def test_unknown_fields_are_passed_through(sabito, sabito_client):
    records = [
        {"id": "c1", "email": "a@example.com", "loyaltyTier": "gold", "tags": ["vip"], "nested": {"x": 1}},
        {"id": "c2"},
        "not even an object",
    ]
    sabito.get(CUSTOMERS_URL, json={"data": records, "meta": {"total": 3}})

    assert fetch_first_page(sabito_client).records == records


# --- retries ----------------------------------------------------------------------


# A caller's usual record, as the sync declares its own (records.SabitoRecord).
UsualRecord = msgspec.defstruct("UsualRecord", [("id", str), ("email", str | None, "")])


def test_a_page_whose_records_all_fit_the_record_type_comes_as_its_instances(sabito, sabito_client):
    sabito.get(
        CUSTOMERS_URL, json={"data": [{"id": "c1", "email": "a@example.com", "extra": 1}, {"id": "c2", "email": None}]}
    )
    sabito.get(CUSTOMERS_URL, json={"data": [{"id": "c3"}, {"id": 4, "email": "b@example.com"}]})

    usual = sabito_client.fetch_customer_page(
        business_id=BUSINESS, updated_after=None, offset=0, limit=2, record_type=UsualRecord
    )
    odd = sabito_client.fetch_customer_page(
        business_id=BUSINESS, updated_after=None, offset=2, limit=2, record_type=UsualRecord
    )

    assert usual.records == [UsualRecord(id="c1", email="a@example.com"), UsualRecord(id="c2", email=None)]
    # One record that does not fit (a numeric id): the whole page as parsed JSON, for
    # the caller to judge record by record.
    assert odd.records == [{"id": "c3"}, {"id": 4, "email": "b@example.com"}]


def test_a_record_type_changes_no_verdict_on_a_body(sabito, sabito_client, sleeps):
    sabito.get(CUSTOMERS_URL, body="<html>Bad gateway</html>")

    with pytest.raises(SabitoResponseError, match="not JSON"):
        sabito_client.fetch_customer_page(
            business_id=BUSINESS, updated_after=None, offset=0, limit=2, record_type=UsualRecord
        )


def test_a_body_nested_too_deep_gets_the_same_verdict_with_a_record_type(sabito, make_client, sleeps):
    # Nested deeper than any parser recurses, inside a key the record type ignores.
    body = '{"data": [{"id": "c1", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}]}"
    sabito.get(CUSTOMERS_URL, body=body)
    client = make_client(max_retries=0)

    with pytest.raises(SabitoResponseError, match="not JSON"):
        client.fetch_customer_page(business_id=BUSINESS, updated_after=None, offset=0, limit=2, record_type=UsualRecord)
    with pytest.raises(SabitoResponseError, match="not JSON"):
        client.fetch_customer_page(business_id=BUSINESS, updated_after=None, offset=0, limit=2)


def test_typed_pages_page_and_resume_exactly_like_parsed_ones(sabito, make_client):
    def run(record_type, start=None) -> tuple[list[str], list[dict]]:
        feed = ids_from(0, 30)
        calls = []

        def drifting(request):
            calls.append(request)
            if len(calls) == 2:  # records already read move to the end
                for moved in ("c2", "c5"):
                    feed.remove(moved)
                    feed.append(moved)
            return offset_feed(feed)(request)

        sabito.add_callback(responses.GET, CUSTOMERS_URL, callback=drifting)
        pages = list(
            make_client(page_size=10).iter_customer_pages(business_id=BUSINESS, start=start, record_type=record_type)
        )
        sabito.reset()
        ids = [record.id if record_type else record["id"] for page in pages for record in page.records]
        return ids, [page.resume_from for page in pages]

    typed_ids, typed_checkpoints = run(UsualRecord)
    parsed_ids, parsed_checkpoints = run(None)

    assert typed_ids == parsed_ids and sorted(typed_ids) == sorted([*ids_from(0, 30), "c2", "c5"])
    assert typed_checkpoints == parsed_checkpoints  # a checkpoint written one way resumes the other
    assert run(None, start=typed_checkpoints[0])[0] == run(UsualRecord, start=parsed_checkpoints[0])[0]


def test_retries_5xx_then_succeeds(sabito, sabito_client, sleeps):
    sabito.get(CUSTOMERS_URL, status=500)
    sabito.get(CUSTOMERS_URL, status=502)
    sabito.get(CUSTOMERS_URL, json=customers("c1"))

    page = fetch_first_page(sabito_client)

    assert [record["id"] for record in page.records] == ["c1"]
    assert len(sabito.calls) == 3
    assert len(sleeps) == 2
    assert_jittered(sleeps[0], 1.0)
    assert_jittered(sleeps[1], 2.0)


def test_backoff_doubles_and_is_capped_at_30_seconds(sabito, make_client, sleeps):
    client = make_client(retry_backoff=10, max_retries=4)
    for _ in range(4):
        sabito.get(CUSTOMERS_URL, status=500)
    sabito.get(CUSTOMERS_URL, json=customers())

    fetch_first_page(client)

    for actual, base in zip(sleeps, [10, 20, 30, 30], strict=True):
        assert_jittered(actual, base)


def test_429_honours_retry_after_seconds(sabito, sabito_client, sleeps):
    sabito.get(CUSTOMERS_URL, status=429, headers={"Retry-After": "7"})
    sabito.get(CUSTOMERS_URL, json=customers())

    fetch_first_page(sabito_client)

    assert sleeps == [7.0]


def test_retry_after_http_date(sabito, sabito_client, sleeps):
    in_twenty_seconds = datetime.now(UTC) + timedelta(seconds=20)
    sabito.get(CUSTOMERS_URL, status=503, headers={"Retry-After": format_datetime(in_twenty_seconds, usegmt=True)})
    sabito.get(CUSTOMERS_URL, json=customers())

    fetch_first_page(sabito_client)

    assert len(sleeps) == 1
    assert 17 <= sleeps[0] <= 20


def test_retry_after_is_capped(sabito, make_client, sleeps):
    client = make_client(max_retry_after=60)
    sabito.get(CUSTOMERS_URL, status=429, headers={"Retry-After": "3600"})
    sabito.get(CUSTOMERS_URL, json=customers())

    fetch_first_page(client)

    assert sleeps == [60]


def test_unparseable_retry_after_falls_back_to_backoff(sabito, sabito_client, sleeps):
    sabito.get(CUSTOMERS_URL, status=503, headers={"Retry-After": "soon"})
    sabito.get(CUSTOMERS_URL, json=customers())

    fetch_first_page(sabito_client)

    assert_jittered(sleeps[0], 1.0)


def test_gives_up_after_max_retries_with_unavailable_error(sabito, make_client, sleeps):
    client = make_client(max_retries=2)
    sabito.get(CUSTOMERS_URL, status=503)

    with pytest.raises(SabitoUnavailableError) as caught:
        fetch_first_page(client, offset=200)

    assert str(caught.value) == "Sabito API unavailable for business biz-123 at offset 200 after 3 attempts: HTTP 503"
    assert caught.value.retryable is True
    assert len(sabito.calls) == 3
    assert len(sleeps) == 2


def test_401_is_fatal_without_retry(sabito, sabito_client, sleeps):
    sabito.get(CUSTOMERS_URL, status=401, json={"error": "invalid key"})

    with pytest.raises(SabitoAuthError) as caught:
        fetch_first_page(sabito_client)

    assert str(caught.value) == "Sabito rejected the API key (HTTP 401) for business biz-123"
    assert caught.value.retryable is False
    assert len(sabito.calls) == 1
    assert sleeps == []


def test_403_is_fatal(sabito, sabito_client, sleeps):
    sabito.get(CUSTOMERS_URL, status=403)

    with pytest.raises(SabitoAuthError, match=r"rejected the API key \(HTTP 403\) for business biz-123"):
        fetch_first_page(sabito_client)

    assert len(sabito.calls) == 1
    assert sleeps == []


def test_connection_error_is_retried(sabito, sabito_client, sleeps):
    sabito.get(CUSTOMERS_URL, body=requests.ConnectionError("connection refused"))
    sabito.get(CUSTOMERS_URL, json=customers("c1"))

    assert len(fetch_first_page(sabito_client).records) == 1
    assert len(sabito.calls) == 2
    assert len(sleeps) == 1


def test_read_timeout_is_retried(sabito, sabito_client):
    sabito.get(CUSTOMERS_URL, body=requests.ReadTimeout("read timed out"))
    sabito.get(CUSTOMERS_URL, json=customers("c1"))

    assert len(fetch_first_page(sabito_client).records) == 1
    assert len(sabito.calls) == 2


def test_body_dropped_mid_read_is_retried(sabito, sabito_client):
    # The headers promise 1000 bytes and the connection ends after a few: what a
    # proxy or server restart mid-response looks like to urllib3.
    sabito.get(CUSTOMERS_URL, body=b'{"data": [{"id": "c1"', headers={"Content-Length": "1000"})
    sabito.get(CUSTOMERS_URL, json=customers("c1"))

    assert len(fetch_first_page(sabito_client).records) == 1
    assert len(sabito.calls) == 2


def test_transient_error_cause_is_named_when_retries_run_out(sabito, make_client):
    client = make_client(max_retries=1)
    sabito.get(CUSTOMERS_URL, body=requests.ConnectTimeout("connect timed out"))

    with pytest.raises(SabitoUnavailableError, match=r"after 2 attempts: ConnectTimeout: connect timed out"):
        fetch_first_page(client)


def test_each_retry_is_logged_as_warning_with_cause_and_wait(sabito, sabito_client, caplog):
    sabito.get(CUSTOMERS_URL, status=429, headers={"Retry-After": "3"})
    sabito.get(CUSTOMERS_URL, json=customers())

    with caplog.at_level(logging.DEBUG, logger="sabito_sync.client"):
        fetch_first_page(sabito_client)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "Sabito request for business biz-123 at offset 0 failed (attempt 1 of 5): HTTP 429; retrying in 3.00s"
    ]
    requests_logged = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(requests_logged) == 2
    assert "business=biz-123 offset=0 limit=100 -> HTTP 200" in requests_logged[1]


# --- answers that cannot be used ------------------------------------------------


def test_non_json_body_is_response_error_naming_business_and_offset(sabito, sabito_client, sleeps):
    sabito.get(CUSTOMERS_URL, body="<html><body>" + "Bad gateway page " * 20 + "</body></html>")

    with pytest.raises(SabitoResponseError) as caught:
        fetch_first_page(sabito_client, offset=200)

    message = str(caught.value)
    assert "business biz-123 at offset 200" in message
    assert "not JSON" in message
    assert "<html><body>Bad gateway" in message
    assert len(message) < 300
    assert caught.value.retryable is False
    # A proxy's error page or a body cut short is usually gone on the next try:
    # asked again with backoff, then reported.
    assert len(sabito.calls) == 5
    assert len(sleeps) == 4


def test_a_malformed_body_once_is_retried_and_the_page_is_read(sabito, sabito_client, sleeps):
    sabito.get(CUSTOMERS_URL, body='{"data": [{"id": "c1"}, {"id": "c')  # cut short
    sabito.get(CUSTOMERS_URL, json=customers("c1", "c2"))

    page = fetch_first_page(sabito_client)

    assert [record["id"] for record in page.records] == ["c1", "c2"]
    assert len(sleeps) == 1


def test_a_page_with_json_extensions_python_reads_is_still_read(sabito, sabito_client):
    # NaN is no JSON, but Python's json reads it; one such record is an invalid
    # record for the sync to report, not a page that fails the whole sync.
    sabito.get(CUSTOMERS_URL, body='{"data": [{"id": "c1", "phone": NaN}, {"id": "c2"}]}')

    page = fetch_first_page(sabito_client)

    assert [record["id"] for record in page.records] == ["c1", "c2"]
    assert len(sabito.calls) == 1


@pytest.mark.parametrize("body", [{"items": []}, {"data": None}, {"data": {"id": "c1"}}, [{"id": "c1"}]])
def test_body_without_data_list_is_response_error(sabito, sabito_client, body):
    sabito.get(CUSTOMERS_URL, json=body)

    with pytest.raises(SabitoResponseError, match=r'business biz-123 at offset 0 with JSON that has no "data" list'):
        fetch_first_page(sabito_client)

    assert len(sabito.calls) == 5  # asked again, like any malformed body, then reported


def test_unexpected_4xx_is_response_error_without_retry(sabito, sabito_client):
    sabito.get(CUSTOMERS_URL, status=404, json={"error": "unknown business"})

    with pytest.raises(SabitoResponseError, match=r"business biz-123 at offset 0 with HTTP 404: .*unknown business"):
        fetch_first_page(sabito_client)

    assert len(sabito.calls) == 1


def test_redirect_is_not_followed(sabito, sabito_client):
    elsewhere = "https://elsewhere.test/api/customers"
    sabito.get(CUSTOMERS_URL, status=302, headers={"Location": elsewhere})
    sabito.get(elsewhere, json=customers("c1"))
    sabito.assert_all_requests_are_fired = False

    with pytest.raises(SabitoResponseError) as caught:
        fetch_first_page(sabito_client)

    assert f"(HTTP 302) to {elsewhere}; not followed so the API key is not sent elsewhere" in str(caught.value)
    assert [call.request.url.split("?")[0] for call in sabito.calls] == [CUSTOMERS_URL]


# --- secrets and plumbing -------------------------------------------------------


def every_error_kind(sabito: responses.RequestsMock, make_client) -> list[SabitoError]:
    """One of each error, provoked by a server that echoes the key wherever it can."""
    client = make_client(max_retries=0)
    sabito.get(CUSTOMERS_URL, status=401, body=f"key {API_KEY} is revoked")
    sabito.get(CUSTOMERS_URL, body=requests.ConnectionError(f"proxy dropped request carrying {API_KEY}"))
    sabito.get(CUSTOMERS_URL, status=500)
    sabito.get(CUSTOMERS_URL, body=f"{' ' * 500}no JSON here, but your key is {API_KEY}")
    sabito.get(CUSTOMERS_URL, json={"error": f"missing data for {API_KEY}"})
    sabito.get(CUSTOMERS_URL, status=400, body=f"bad request from {API_KEY}")
    sabito.get(CUSTOMERS_URL, status=301, headers={"Location": f"https://elsewhere.test/?apiKey={API_KEY}"})
    errors: list[SabitoError] = []
    for _ in range(7):
        with pytest.raises(SabitoError) as caught:
            fetch_first_page(client)
        errors.append(caught.value)
    sabito.get(CUSTOMERS_URL, json=customers("c1", "c2"))  # ignores offset: the same page twice
    with pytest.raises(SabitoResponseError) as caught:
        list(client.iter_customer_pages(business_id=BUSINESS))
    errors.append(caught.value)
    return errors


def test_api_key_never_in_error_messages(sabito, make_client):
    errors = every_error_kind(sabito, make_client)

    assert {type(error) for error in errors} == {SabitoAuthError, SabitoUnavailableError, SabitoResponseError}
    for error in errors:
        assert API_KEY not in str(error)
        assert API_KEY not in repr(error)
    assert API_KEY not in repr(make_client())


def test_api_key_never_in_log_lines(sabito, make_client, caplog):
    client = make_client(max_retries=1)
    sabito.get(CUSTOMERS_URL, body=requests.ConnectionError(f"proxy dropped request carrying {API_KEY}"))
    sabito.get(CUSTOMERS_URL, json=customers())

    with caplog.at_level(logging.DEBUG):
        fetch_first_page(client)

    assert caplog.records
    assert all(API_KEY not in record.getMessage() for record in caplog.records)


def test_errors_survive_pickling(sabito, sabito_client):
    sabito.get(CUSTOMERS_URL, status=403)
    with pytest.raises(SabitoAuthError) as caught:
        fetch_first_page(sabito_client, offset=300)

    restored = pickle.loads(pickle.dumps(caught.value))

    assert (type(restored), str(restored)) == (SabitoAuthError, str(caught.value))
    assert f"for business {BUSINESS}" in str(restored) and restored.retryable is False


def test_context_manager_closes_the_session_it_created(monkeypatch):
    closed = []
    monkeypatch.setattr(requests.Session, "close", lambda self: closed.append(self))

    with SabitoClient(base_url=BASE_URL, api_key=API_KEY) as client:
        assert isinstance(client, SabitoClient)

    assert len(closed) == 1


def test_a_borrowed_session_is_left_open_for_its_owner():
    class TrackedSession(requests.Session):
        closed = False

        def close(self):
            self.closed = True
            super().close()

    session = TrackedSession()
    SabitoClient(base_url=BASE_URL, api_key=API_KEY, session=session).close()

    assert session.closed is False


# --- The environment: proxies and CA bundle, read once per client -----------------------------


@pytest.fixture
def live_simulator():
    from sabito_simulator import serving

    with serving(customers_per_business=5, businesses=1, seed=3, api_key=API_KEY) as simulator:
        yield simulator


@pytest.fixture
def clean_proxy_environment(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def test_requests_go_through_the_proxy_the_environment_names(live_simulator, clean_proxy_environment):
    clean_proxy_environment.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    business = live_simulator.business_ids[0]

    with (
        SabitoClient(base_url=live_simulator.url, api_key=API_KEY, max_retries=0) as client,
        pytest.raises(SabitoUnavailableError, match="after 1 attempts"),
    ):
        list(client.iter_customer_pages(business_id=business))

    assert live_simulator.stats["customerRequests"] == 0  # nothing reached Sabito directly


def test_no_proxy_lets_requests_reach_sabito_directly(live_simulator, clean_proxy_environment):
    clean_proxy_environment.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    clean_proxy_environment.setenv("NO_PROXY", "127.0.0.1,localhost")
    business = live_simulator.business_ids[0]

    with SabitoClient(base_url=live_simulator.url, api_key=API_KEY, max_retries=0) as client:
        records = [record for page in client.iter_customer_pages(business_id=business) for record in page.records]

    assert len(records) == 5


def test_the_ca_bundle_the_environment_names_is_used(clean_proxy_environment, tmp_path):
    bundle = tmp_path / "corporate-ca.pem"
    bundle.write_text("")
    clean_proxy_environment.setenv("REQUESTS_CA_BUNDLE", str(bundle))

    with SabitoClient(base_url="https://sabito.example", api_key=API_KEY) as client:
        # An empty bundle verifies nothing, so the TLS handshake would fail; the
        # setting itself is what a user configures, and what requests would use.
        assert client._session.verify == str(bundle)


LIMIT = 1024 * 1024


def first_page(client: SabitoClient) -> CustomerPage:
    return next(iter(client.iter_customer_pages(business_id=BUSINESS)))


def peak_memory_while(fetch) -> tuple[BaseException | None, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        fetch()
    except SabitoError as exc:
        raised: BaseException | None = exc
    else:
        raised = None
    finally:
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return raised, peak


def test_a_compression_bomb_fails_the_fetch_without_inflating_it(sabito, make_client, sleeps):
    import gzip

    # 40 MB of JSON that travels as about 40 KB.
    bomb = gzip.compress(b'{"data": [' + b" " * (40 * LIMIT) + b"]}", compresslevel=9)
    sabito.get(CUSTOMERS_URL, body=bomb, headers={"Content-Encoding": "gzip"}, content_type="application/json")
    client = make_client(max_response_bytes=LIMIT)

    raised, peak = peak_memory_while(lambda: first_page(client))

    assert isinstance(raised, SabitoResponseError) and not raised.retryable
    assert "too large: over 1,048,576 bytes decompressed" in str(raised)
    assert "SABITO_MAX_RESPONSE_BYTES=1048576" in str(raised)
    assert peak < 10 * LIMIT  # the pieces read before the limit, never the 40 MB
    assert len(sabito.calls) == 1 and sleeps == []  # not retried: it would come again


def test_a_huge_plain_body_fails_the_fetch_by_its_declared_length_or_its_size(sabito, make_client):
    huge = b'{"data": [' + b" " * (3 * LIMIT) + b"]}"
    sabito.get(CUSTOMERS_URL, body=huge, content_type="application/json", auto_calculate_content_length=True)
    sabito.get(CUSTOMERS_URL, body=huge, content_type="application/json")  # no Content-Length
    declared, undeclared = make_client(max_response_bytes=LIMIT), make_client(max_response_bytes=LIMIT)

    with pytest.raises(SabitoResponseError, match=r"too large: it declares 3,145,740 bytes"):
        first_page(declared)
    with pytest.raises(SabitoResponseError, match=r"too large: over 1,048,576 bytes"):
        first_page(undeclared)


def test_a_page_under_the_limit_is_read_whole(sabito, make_client):
    records = [{"id": f"c{n}", "name": "x" * 500} for n in range(100)]
    sabito.get(CUSTOMERS_URL, json={"data": records})

    page = first_page(make_client(max_response_bytes=64 * 1024))

    assert [record["id"] for record in page.records] == [f"c{n}" for n in range(100)]
