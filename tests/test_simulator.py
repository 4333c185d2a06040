"""The Sabito simulator, exercised over real HTTP with `requests`.

No Django here: run with `pytest tests/test_simulator.py -p no:django`.
"""

import json
import re
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from sabito_simulator import Faults, SabitoSimulator, serving

KEY = "test-sim-key"
ROOT = Path(__file__).resolve().parent.parent
UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STRING_FIELDS = ("email", "name", "phone", "address", "city", "state", "country", "sourceReferralId", "sourceType")


@pytest.fixture
def sabito_test_settings():
    """Replaces conftest's autouse fixture of that name, which needs pytest-django's
    `settings`: these tests never touch Django."""


@pytest.fixture
def simulator():
    with serving(customers_per_business=250, businesses=2, seed=42, api_key=KEY) as running:
        yield running


@pytest.fixture
def business_id(simulator):
    return simulator.business_ids[0]


def get_customers(simulator, business_id, *, key=KEY, timeout=(2, 5), **params):
    headers = {"X-API-Key": key} if key is not None else {}
    return requests.get(
        f"{simulator.url}/api/customers",
        params={"businessId": business_id, **params},
        headers=headers,
        timeout=timeout,
    )


def page_naively(simulator, business_id, *, limit, **params):
    """The pager a careless client writes: offset += limit until a short page."""
    records, offset = [], 0
    while True:
        page = get_customers(simulator, business_id, limit=limit, offset=offset, **params).json()["data"]
        records.extend(page)
        offset += limit
        if len(page) < limit:
            return records


def is_valid_record(record) -> bool:
    if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not UUID_PATTERN.match(record["id"]):
        return False
    for name in STRING_FIELDS:
        value = record.get(name)
        if value is None and name in ("phone", "country"):
            continue
        if not isinstance(value, str) or len(value) > 255 or any(ord(char) < 32 for char in value):
            return False
    return re.fullmatch(r"[a-z0-9.]+@[a-z0-9.-]+\.[a-z]+", record["email"]) is not None


def control(simulator, method, action, payload=None, **params):
    return requests.request(method, f"{simulator.url}/_simulator/{action}", json=payload, params=params, timeout=30)


# --- The API ------------------------------------------------------------------------


def test_customers_require_the_api_key(simulator, business_id):
    missing = get_customers(simulator, business_id, key=None)
    wrong = get_customers(simulator, business_id, key="not-the-key")

    assert (missing.status_code, missing.json()) == (401, {"error": "invalid API key"})
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid API key"})


def test_records_carry_every_field_of_the_sabito_mapping(simulator, business_id):
    record = get_customers(simulator, business_id, limit=1).json()["data"][0]

    assert set(record) == {
        "id",
        "email",
        "name",
        "phone",
        "address",
        "city",
        "state",
        "country",
        "sourceReferralId",
        "sourceType",
        "updatedAt",
        "createdAt",
    }
    assert record["sourceType"] == "referral"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["updatedAt"])


def test_paging_with_limit_and_offset_returns_every_record_exactly_once(simulator, business_id):
    ids = [record["id"] for record in page_naively(simulator, business_id, limit=40)]

    assert len(ids) == len(set(ids)) == 250
    assert set(ids) == {record["id"] for record in simulator.customers(business_id)}


def test_limit_defaults_to_100(simulator, business_id):
    assert len(get_customers(simulator, business_id).json()["data"]) == 100


def test_updated_after_filters_strictly(simulator, business_id):
    everything = simulator.customers(business_id)
    boundary = everything[100]["updatedAt"]

    served = get_customers(simulator, business_id, limit=1000, updatedAfter=boundary).json()["data"]

    assert served == [record for record in everything if record["updatedAt"] > boundary]
    assert boundary not in {record["updatedAt"] for record in served}


def test_records_are_ordered_by_updated_at_then_id(simulator, business_id):
    served = get_customers(simulator, business_id, limit=1000).json()["data"]
    keys = [(record["updatedAt"], record["id"]) for record in served]

    assert keys == sorted(keys)
    assert len({updated_at for updated_at, _ in keys}) < len(keys), "the seeded data should contain shared timestamps"


def test_max_page_size_caps_the_page():
    with serving(customers_per_business=120, businesses=1, api_key=KEY, max_page_size=50) as capped:
        page = get_customers(capped, capped.business_ids[0], limit=100).json()["data"]

    assert len(page) == 50


def test_max_page_size_fault_overrides_the_cap(simulator, business_id):
    simulator.set_faults(Faults(max_page_size=20))

    assert len(get_customers(simulator, business_id, limit=100).json()["data"]) == 20


@pytest.mark.parametrize(
    "params, message",
    [
        ({"businessId": ""}, "businessId is required"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"updatedAfter": "yesterday"}, "updatedAfter"),
    ],
)
def test_bad_parameters_answer_400_with_a_message(simulator, business_id, params, message):
    response = requests.get(
        f"{simulator.url}/api/customers",
        params={"businessId": business_id, **params},
        headers={"X-API-Key": KEY},
        timeout=30,
    )

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_unknown_business_answers_404(simulator):
    response = get_customers(simulator, "00000000-0000-0000-0000-000000000000")

    assert (response.status_code, response.json()) == (404, {"error": "unknown business"})


# --- Data and control -----------------------------------------------------------------


def test_seeded_data_exercises_missing_phone_and_country(simulator):
    records = [record for business in simulator.business_ids for record in simulator.customers(business)]
    emails = [record["email"] for record in records[:250]]

    assert any(record["phone"] is None for record in records)
    assert any(record["country"] is None for record in records)
    assert len(set(emails)) == len(emails) and all(email == email.lower() for email in emails)
    oldest = min(record["updatedAt"] for record in records)
    epoch = simulator.epoch
    assert oldest >= (epoch - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S")
    assert max(record["updatedAt"] for record in records) < epoch.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_first_business_is_icreations_global(simulator):
    assert list(simulator.business_names.values()) == ["iCreations Global", "Business 2"]


def test_edit_moves_records_to_the_end_and_bumps_updated_at(simulator, business_id):
    before = {record["id"]: record for record in simulator.customers(business_id)}
    latest_before = max(record["updatedAt"] for record in before.values())

    edited = simulator.edit(business_id, 3)
    served = get_customers(simulator, business_id, limit=1000).json()["data"]

    assert [record["id"] for record in served[-3:]] == sorted(edited)
    for record in served[-3:]:
        assert record["updatedAt"] > latest_before
        assert (record["name"], record["phone"]) != (before[record["id"]]["name"], before[record["id"]]["phone"])
        assert record["email"] == before[record["id"]]["email"]


def test_add_appends_new_customers_with_unique_emails(simulator, business_id):
    added = simulator.add(business_id, 5)
    records = simulator.customers(business_id)

    assert len(records) == 255
    assert {record["id"] for record in records[-5:]} == set(added)
    assert len({record["email"] for record in records}) == 255


def test_delete_removes_customers_from_the_feed(simulator, business_id):
    deleted = simulator.delete(business_id, 4)
    served = {record["id"] for record in get_customers(simulator, business_id, limit=1000).json()["data"]}

    assert len(served) == 246
    assert not served & set(deleted)


def test_same_seed_gives_the_same_data():
    first = SabitoSimulator(customers_per_business=50, seed=7)
    second = SabitoSimulator(customers_per_business=50, seed=7)

    assert first.business_ids == second.business_ids
    assert [first.customers(business) for business in first.business_ids] == [
        second.customers(business) for business in second.business_ids
    ]


def test_different_seeds_give_different_data():
    first = SabitoSimulator(customers_per_business=50, seed=7)
    second = SabitoSimulator(customers_per_business=50, seed=8)

    assert set(first.business_ids).isdisjoint(second.business_ids)
    assert first.customers(first.business_ids[0]) != second.customers(second.business_ids[0])


# --- A state file: what the controls changed survives a restart --------------------


def restarted(state_file, **options):
    return SabitoSimulator(customers_per_business=40, seed=7, state_file=state_file, **options)


def edits(simulator, business, ids):
    return {
        record["id"]: (record["name"], record["phone"])
        for record in simulator.customers(business)
        if record["id"] in ids
    }


def test_with_a_state_file_a_restart_keeps_the_changes_and_makes_new_ones(tmp_path, monkeypatch):
    state_file = tmp_path / "state.jsonl"
    first = restarted(state_file)
    business = first.business_ids[0]
    first_edits = edits(first, business, first.edit(business, 3))
    added = first.add(business, 2)
    first.delete(business, 1)
    before_restart = first.customers(business)
    # The second start is on a later day: the seeded data is still the first start's.
    later_day = first.epoch + timedelta(days=1)
    monkeypatch.setattr("sabito_simulator.server.default_epoch", lambda: later_day)

    second = restarted(state_file)

    assert second.epoch == first.epoch
    assert second.customers(business) == before_restart
    # The next changes are new ones, not the first start's drawn again.
    assert edits(second, business, second.edit(business, 3)) != first_edits
    assert set(second.add(business, 2)).isdisjoint(added)
    emails = [record["email"] for record in second.customers(business)]
    assert len(set(emails)) == len(emails) == 40 + 2 - 1 + 2


def test_without_a_state_file_every_start_serves_the_seeded_data(tmp_path):
    first = SabitoSimulator(customers_per_business=40, seed=7)
    business = first.business_ids[0]
    first.add(business, 2)

    assert len(SabitoSimulator(customers_per_business=40, seed=7).customers(business)) == 40


def test_a_state_file_for_other_data_is_started_afresh(tmp_path):
    state_file = tmp_path / "state.jsonl"
    first = restarted(state_file)
    first.add(first.business_ids[0], 5)

    other = SabitoSimulator(customers_per_business=40, seed=8, state_file=state_file)

    assert [len(other.customers(business)) for business in other.business_ids] == [40, 40]
    assert len(restarted(state_file).customers(first.business_ids[0])) == 40  # the seed-7 changes are gone


def test_reset_forgets_the_kept_changes(tmp_path):
    state_file = tmp_path / "state.jsonl"
    first = restarted(state_file)
    business = first.business_ids[0]
    first.add(business, 5)
    first.reset()

    assert len(restarted(state_file).customers(business)) == 40


def test_a_half_written_last_change_is_ignored(tmp_path):
    state_file = tmp_path / "state.jsonl"
    first = restarted(state_file)
    business = first.business_ids[0]
    first.add(business, 2)
    with state_file.open("a") as file:
        file.write('{"action": "add", "busin')  # the simulator was killed mid-write

    assert len(restarted(state_file).customers(business)) == 42


def test_control_endpoints_work_over_http(simulator, business_id):
    businesses = control(simulator, "GET", "businesses").json()["data"]
    assert businesses[0] == {"id": business_id, "name": "iCreations Global", "customers": 250}

    edited = control(simulator, "POST", "edit", {"businessId": business_id, "count": 2}).json()["ids"]
    added = control(simulator, "POST", "add", {"businessId": business_id, "count": 3}).json()["ids"]
    deleted = control(simulator, "POST", "delete", {"businessId": business_id, "count": 1}).json()["ids"]
    listed = control(simulator, "GET", "customers", businessId=business_id).json()["data"]
    assert (len(edited), len(added), len(deleted), len(listed)) == (2, 3, 1, 252)
    assert listed == simulator.customers(business_id)

    faults = control(simulator, "POST", "faults", {"errorRate": 1}).json()["faults"]
    assert faults["error_rate"] == 1
    assert get_customers(simulator, business_id).status_code == 500
    assert control(simulator, "POST", "faults", {}).json()["faults"] == Faults().to_dict()

    stats = control(simulator, "GET", "stats").json()
    assert stats["customerRequests"] == 1 and stats["statuses"] == {"500": 1}

    assert control(simulator, "POST", "reset").status_code == 200
    assert len(simulator.customers(business_id)) == 250
    assert control(simulator, "GET", "stats").json()["customerRequests"] == 0


def test_control_endpoints_reject_bad_input(simulator, business_id):
    typo = control(simulator, "POST", "faults", {"eror_rate": 1})
    too_much = control(simulator, "POST", "faults", {"error_rate": 0.7, "drop_rate": 0.7})
    unknown = control(simulator, "POST", "edit", {"businessId": "nope", "count": 1})
    wrong_method = control(simulator, "GET", "edit")

    assert typo.status_code == 400 and "eror_rate" in typo.json()["error"]
    assert too_much.status_code == 400 and "must not exceed 1" in too_much.json()["error"]
    assert unknown.status_code == 404
    assert wrong_method.status_code == 405


def test_stats_count_requests_records_and_statuses(simulator, business_id):
    get_customers(simulator, business_id, limit=10)
    get_customers(simulator, business_id, key="wrong")

    stats = simulator.stats

    assert stats["customerRequests"] == 2
    assert stats["recordsServed"] == 10
    assert stats["statuses"] == {"200": 1, "401": 1}


# --- Faults -------------------------------------------------------------------------


def test_error_fault_answers_500(simulator, business_id):
    simulator.set_faults(Faults(error_rate=1))

    assert get_customers(simulator, business_id).status_code == 500


def test_rate_limit_fault_answers_429_with_retry_after(simulator, business_id):
    simulator.set_faults({"rate_limit_rate": 1, "retry_after": 3})

    response = get_customers(simulator, business_id)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"


def test_garbage_fault_answers_200_with_a_body_that_is_not_json(simulator, business_id):
    simulator.set_faults(Faults(garbage_rate=1))

    response = get_customers(simulator, business_id)

    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_truncated_fault_sends_a_complete_response_whose_json_is_cut(simulator, business_id):
    simulator.set_faults(Faults(truncated_rate=1))

    response = get_customers(simulator, business_id)

    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    with pytest.raises(ValueError):
        json.loads(response.content)


def test_drop_fault_closes_the_connection_mid_body(simulator, business_id):
    simulator.set_faults(Faults(drop_rate=1))

    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        get_customers(simulator, business_id)


def test_timeout_fault_outlasts_the_client_read_timeout(simulator, business_id):
    simulator.set_faults(Faults(timeout_rate=1, timeout_seconds=2))

    with pytest.raises(requests.exceptions.ReadTimeout):
        get_customers(simulator, business_id, timeout=(1, 0.3))


def test_slow_fault_adds_latency_to_every_page(simulator, business_id):
    simulator.set_faults(Faults(slow_seconds=0.2))

    started = time.monotonic()
    response = get_customers(simulator, business_id)

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2


def test_faults_do_not_hide_a_rejected_key(simulator, business_id):
    simulator.set_faults(Faults(error_rate=1))

    assert get_customers(simulator, business_id, key="wrong").status_code == 401


def test_fault_seed_makes_a_run_reproducible(simulator, business_id):
    def statuses():
        simulator.set_faults(Faults(error_rate=0.5, seed=3))
        return [get_customers(simulator, business_id, limit=1).status_code for _ in range(12)]

    first = statuses()

    assert first == statuses()
    assert {200, 500} <= set(first)


def test_edit_during_paging_makes_a_naive_pager_miss_records(simulator, business_id):
    simulator.set_faults(Faults(edit_during_paging={"afterRequests": 1, "count": 3}))

    seen = {record["id"] for record in page_naively(simulator, business_id, limit=20)}
    missed = {record["id"] for record in simulator.customers(business_id)} - seen

    assert len(missed) >= 1
    assert len(simulator.stats["driftEditedIds"]) == 3


def test_bad_records_rate_serves_invalid_records(simulator, business_id):
    simulator.set_faults(Faults(bad_records_rate=1))

    page = get_customers(simulator, business_id, limit=50).json()["data"]

    assert len(page) == 50
    assert not any(is_valid_record(record) for record in page)
    assert all(is_valid_record(record) for record in simulator.customers(business_id))


def test_invalid_faults_are_rejected_in_python():
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError, match="unknown fault"):
        Faults.from_value({"errorRat": 0.1})
    with pytest.raises(ValueError, match="afterRequests"):
        Faults(edit_during_paging={"afterRequests": 0, "count": 1})


# --- Command line -------------------------------------------------------------------


def read_lines(stream, count: int, *, timeout: float) -> list[str]:
    """The first lines a child prints, without hanging the suite if it prints nothing."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(stream.readline().strip() for _ in range(count)), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive() or len(lines) < count:
        raise AssertionError(f"the simulator printed {lines!r} instead of {count} lines within {timeout} s")
    return lines


def test_module_runs_as_a_command_line_server():
    # --port 0 works because the simulator prints the port it actually bound.
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sabito_simulator",
            "--port",
            "0",
            "--customers",
            "30",
            "--businesses",
            "2",
            "--seed",
            "5",
            "--api-key",
            KEY,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url, business_line = read_lines(process.stdout, 2, timeout=60)
        business_ids = business_line.split()
        response = requests.get(
            f"{url}/api/customers", params={"businessId": business_ids[0]}, headers={"X-API-Key": KEY}, timeout=5
        )
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert business_ids == SabitoSimulator(customers_per_business=30, seed=5).business_ids
    assert len(response.json()["data"]) == 30
    assert process.returncode == 0
