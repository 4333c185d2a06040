"""A Sabito simulator: a real HTTP server that speaks Sabito's `GET /api/customers`.

The demo, the end-to-end tests, the chaos tests and the benchmark all talk to it over
real HTTP. It is plain standard library on purpose (`python -m sabito_sync.simulator`
runs it without Django), and each of them starts it the same way: `with
SabitoSimulator(...) as simulator:` serves it from a background thread for the block.

What it serves
    GET /api/customers?businessId=&updatedAfter=&limit=&offset=   (header X-API-Key)
        {"data": [customer, ...]}, customers with `updatedAt > updatedAfter` ordered by
        (updatedAt, id): the order in which offset pagination drifts when records are
        edited mid-scan. `limit` defaults to 100 and is silently capped at
        `max_page_size`, as real servers do.

    Control endpoints, no key needed (tests, demo, benchmark):
        GET  /_simulator/businesses                  ids, names, customer counts
        GET  /_simulator/customers?businessId=       every current record, in served order
        POST /_simulator/edit|add|delete             {"businessId", "count"} -> {"ids": [...]}
        GET  /_simulator/faults, POST /_simulator/faults   fault config ({} resets)
        GET  /_simulator/stats                       requests, customerRequests, recordsServed,
                                                     statuses, faultsInjected, driftEditedIds
        POST /_simulator/reset                       seeded data, no faults, zeroed stats

The data is deterministic for a seed: the same seed gives the same businesses and
customers (ids, emails, names, timestamps) in any process started on the same UTC day.
Faults (`Faults`) apply to /api/customers only, after the key and the parameters
have been checked, so a 401 or 400 always means what it says.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import hmac
import json
import os
import random
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import unicodedata
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ["EditDuringPaging", "Faults", "SabitoSimulator", "UnknownBusinessError", "main"]

DEFAULT_LIMIT = 100
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DAY_MS = 24 * 60 * 60 * 1000
HISTORY_MS = 30 * DAY_MS
# A few percent of customers lack a phone or a country, so the sync's "country
# defaults to USA" and "no phone" paths run on every demo and test, not only in theory.
MISSING_PHONE_RATE = 0.03
MISSING_COUNTRY_RATE = 0.03
# Bulk imports give many records the same updatedAt; ties are where a strict
# `updatedAt > watermark` drops records, so the seeded data contains some.
SHARED_TIMESTAMP_RATE = 0.02
MAX_CONTROL_BODY = 1 << 20
BUSINESS_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://sabito.example/simulator/businesses")

FIRST_NAMES = (
    "Ama", "Kwame", "Kofi", "Abena", "Yaw", "Efua", "Akosua", "Kojo", "John", "Mary", "José",
    "Zoë", "Chloé", "Søren", "Priya", "Wei", "Fatima", "Liam", "Olivia", "Noah", "Emma", "Aisha",
    "Mateo", "Seán", "Łukasz", "Chidi", "Ngozi", "Hiroshi", "Ana", "David",
)
LAST_NAMES = (
    "Mensah", "Owusu", "Boateng", "Asante", "Osei", "Agyeman", "Smith", "Johnson", "Williams",
    "Brown", "García", "O'Brien", "Nguyen", "Patel", "Kim", "Müller", "Okafor", "Adeyemi", "Rossi",
    "Dubois", "van der Berg", "Nowak", "Tanaka", "Silva", "Lee",
)
EMAIL_DOMAINS = ("example.com", "example.org", "mail.example.net")  # RFC 2606: never a real inbox
STREETS = (
    "Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Independence Ave", "Liberation Rd",
    "High Street", "Station Rd", "Queen St W", "Pine St", "Ring Rd Central",
)
# (country as Sabito sends it, phone prefix, digits after the prefix, [(city, state)])
COUNTRIES = (
    ("USA", "+1", 10, (("New York", "NY"), ("Austin", "TX"), ("Seattle", "WA"), ("Denver", "CO"), ("Miami", "FL"))),
    ("Ghana", "+233", 9, (("Accra", "Greater Accra"), ("Kumasi", "Ashanti"), ("Tamale", "Northern"))),
    ("Canada", "+1", 10, (("Toronto", "ON"), ("Vancouver", "BC"))),
    ("United Kingdom", "+44", 10, (("London", "England"), ("Manchester", "England"))),
)
COUNTRY_WEIGHTS = (70, 15, 8, 7)
GARBAGE_BODY = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
    b"<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


class UnknownBusinessError(LookupError):
    def __init__(self, business_id: str):
        self.business_id = business_id
        super().__init__(f"unknown business {business_id!r}")


class BadRequest(ValueError):
    """A request the simulator refuses with HTTP 400; the message goes to the client."""


# --- Faults ------------------------------------------------------------------------


@dataclass(frozen=True)
class EditDuringPaging:
    """After `after_requests` pages of a business were served, edit `count` of the
    records the pager already passed, once: they jump to the end of the order and
    every later record shifts back, so a plain limit/offset pager skips `count`."""

    after_requests: int
    count: int

    def __post_init__(self):
        for name in ("after_requests", "count"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"edit_during_paging.{_camel(name)} must be a whole number >= 1, got {value!r}")

    @classmethod
    def from_value(cls, value) -> EditDuringPaging | None:
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ValueError('edit_during_paging must be {"afterRequests": N, "count": K} or null')
        known = {"after_requests", "count"}
        values = {_snake(key): item for key, item in value.items()}
        if unknown := sorted(set(values) - known):
            raise ValueError(f"unknown edit_during_paging key(s) {unknown}; expected afterRequests and count")
        if missing := sorted(known - set(values)):
            raise ValueError(f"edit_during_paging is missing {[_camel(name) for name in missing]}")
        return cls(**values)

    def to_dict(self) -> dict:
        return {"afterRequests": self.after_requests, "count": self.count}


@dataclass(frozen=True)
class Faults:
    """How /api/customers misbehaves. Rates are per request and exclusive: one draw
    picks at most one of error, rate limit, timeout, drop, truncated, garbage, so their
    sum must not exceed 1. `bad_records_rate` is drawn per record of a page that is
    otherwise served normally. `seed` makes a run's faults reproducible (default: the
    simulator's seed)."""

    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: int = 1
    timeout_rate: float = 0.0
    timeout_seconds: float = 5.0
    drop_rate: float = 0.0
    truncated_rate: float = 0.0
    garbage_rate: float = 0.0
    slow_seconds: float = 0.0
    edit_during_paging: EditDuringPaging | None = None
    max_page_size: int | None = None
    bad_records_rate: float = 0.0
    seed: int | None = None

    EXCLUSIVE_RATES = ("error_rate", "rate_limit_rate", "timeout_rate", "drop_rate", "truncated_rate", "garbage_rate")

    def __post_init__(self):
        for name in (*self.EXCLUSIVE_RATES, "bad_records_rate"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
        if sum(getattr(self, name) for name in self.EXCLUSIVE_RATES) > 1 + 1e-9:
            raise ValueError(f"the sum of {', '.join(self.EXCLUSIVE_RATES)} must not exceed 1")
        for name in ("timeout_seconds", "slow_seconds"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if not _is_int(self.retry_after) or self.retry_after < 0:
            raise ValueError(f"retry_after must be a whole number of seconds >= 0, got {self.retry_after!r}")
        if self.max_page_size is not None and (not _is_int(self.max_page_size) or self.max_page_size < 1):
            raise ValueError(f"max_page_size must be a whole number >= 1 or null, got {self.max_page_size!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"seed must be a whole number or null, got {self.seed!r}")
        object.__setattr__(self, "edit_during_paging", EditDuringPaging.from_value(self.edit_during_paging))

    @classmethod
    def from_value(cls, value: Faults | dict | None) -> Faults:
        """Accepts a `Faults`, None (no faults) or a dict with snake_case or camelCase keys."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ValueError("faults must be a JSON object")
        known = {item.name for item in fields(cls)}
        values = {_snake(key): item for key, item in value.items()}
        if unknown := sorted(set(values) - known):
            raise ValueError(f"unknown fault setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["edit_during_paging"] = self.edit_during_paging.to_dict() if self.edit_during_paging else None
        return values


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# --- Data --------------------------------------------------------------------------


def format_timestamp(ms: int) -> str:
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(ms // 1000))}.{ms % 1000:03d}Z"


def parse_timestamp_ms(text: str) -> int:
    """The whole milliseconds at or before an ISO 8601 instant. A record at `ms` is
    strictly after the instant exactly when `ms` is greater than this value, even
    when the client sends microseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        hint = ""
        if " " in text:
            # An unencoded "+00:00" arrives as " 00:00": say so instead of a bare "invalid".
            hint = " (a '+' in a query string must be sent as %2B)"
        raise BadRequest(f"updatedAfter={text!r} is not an ISO 8601 timestamp{hint}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - UNIX_EPOCH) // timedelta(milliseconds=1)


def default_epoch() -> datetime:
    """Start of the current UTC day: recent enough that a sync's clock-based watermark
    makes sense, fixed enough that two simulators with one seed serve identical data."""
    now = datetime.now(timezone.utc)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _encode(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


@functools.cache
def _email_word(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]", "", ascii_name)


def _phone(rng: random.Random, country: tuple) -> str:
    _, prefix, digits, _ = country
    return prefix + str(rng.randrange(2 * 10 ** (digits - 1), 10**digits))


def _new_customer(rng: random.Random, *, seq: int, updated_ms: int, created_ms: int) -> dict:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    country = rng.choices(COUNTRIES, weights=COUNTRY_WEIGHTS)[0]
    city, state = rng.choice(country[3])
    missing_country = rng.random() < MISSING_COUNTRY_RATE
    if missing_country:
        country = COUNTRIES[0]  # a record without a country is a US one: the mapping's default
        city, state = rng.choice(country[3])
    missing_phone = rng.random() < MISSING_PHONE_RATE
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        # The sequence number keeps emails unique within a business for ever, also
        # across deletes and adds.
        "email": f"{_email_word(first)}.{_email_word(last)}.{seq}@{rng.choice(EMAIL_DOMAINS)}",
        "name": f"{first} {last}",
        "phone": None if missing_phone else _phone(rng, country),
        "address": f"{rng.randrange(1, 10000)} {rng.choice(STREETS)}",
        "city": city,
        "state": state,
        "country": None if missing_country else country[0],
        "sourceReferralId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "sourceType": "referral",
        "updatedAt": format_timestamp(updated_ms),
        "createdAt": format_timestamp(created_ms),
    }


def _edited(record: dict, rng: random.Random, *, updated_ms: int) -> dict:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    country = next((c for c in COUNTRIES if c[0] == record["country"]), COUNTRIES[0])
    return record | {
        "name": f"{first} {last}",
        "phone": _phone(rng, country),
        "updatedAt": format_timestamp(updated_ms),
    }


class _Business:
    """One business's customers, kept as the exact bytes served, plus a sorted index
    rebuilt lazily after a change (edits are rare next to page reads)."""

    def __init__(self, *, business_id: str, name: str):
        self.id = business_id
        self.name = name
        self.entries: dict[str, tuple[int, bytes]] = {}  # id -> (updatedAt ms, JSON)
        self.next_seq = 0
        self.pages_served = 0
        self.drift_done = False
        self._keys: list[int] = []
        self._ids: list[str] = []
        self._blobs: list[bytes] = []
        self._dirty = True

    def put(self, record: dict, updated_ms: int) -> None:
        self.entries[record["id"]] = (updated_ms, _encode(record))
        self._dirty = True

    def remove(self, customer_id: str) -> None:
        del self.entries[customer_id]
        self._dirty = True

    def record(self, customer_id: str) -> dict:
        return json.loads(self.entries[customer_id][1])

    def index(self) -> tuple[list[int], list[str], list[bytes]]:
        if self._dirty:
            ordered = sorted(self.entries.items(), key=lambda item: (item[1][0], item[0]))
            self._keys = [updated_ms for _, (updated_ms, _) in ordered]
            self._ids = [customer_id for customer_id, _ in ordered]
            self._blobs = [blob for _, (_, blob) in ordered]
            self._dirty = False
        return self._keys, self._ids, self._blobs

    def view_start(self, after_ms: int | None) -> int:
        keys, _, _ = self.index()
        return 0 if after_ms is None else bisect.bisect_right(keys, after_ms)


def _generate_business(*, seed: int, index: int, customers: int, epoch_ms: int) -> _Business:
    business = _Business(
        business_id=str(uuid.uuid5(BUSINESS_NAMESPACE, f"{seed}:{index}")),
        name="iCreations Global" if index == 0 else f"Business {index + 1}",
    )
    rng = random.Random(f"sabito-simulator:{seed}:{index}")
    updated_ms = epoch_ms - 1
    for seq in range(customers):
        if not (seq and rng.random() < SHARED_TIMESTAMP_RATE):
            updated_ms = epoch_ms - 1 - rng.randrange(HISTORY_MS)
        created_ms = updated_ms - rng.randrange(3 * HISTORY_MS)
        business.put(_new_customer(rng, seq=seq, updated_ms=updated_ms, created_ms=created_ms), updated_ms)
    business.next_seq = customers
    business.index()  # sort now, not inside the first request
    return business


# --- Hostile records ---------------------------------------------------------------


def _hostile_variant(record: dict, rng: random.Random) -> dict:
    """A record a careless sync would choke on or store as garbage."""
    bad = dict(record)
    kind = rng.randrange(8)
    if kind == 0:
        del bad["id"]
    elif kind == 1:
        bad["id"] = rng.randrange(1, 10**6)
    elif kind == 2:
        bad["email"] = {"address": record["email"]}
    elif kind == 3:
        bad["name"] = record["name"].split(" ", 1)
    elif kind == 4:
        bad["phone"] = rng.randrange(10**9, 10**10)
    elif kind == 5:
        bad["email"] = rng.choice(("not-an-email", "two@@example.com", "@example.com", ""))
    elif kind == 6:
        bad["name"] = "N" * 5000
        bad["address"] = "A" * 10000
    else:
        bad["name"] = "Eve\x00\x07\x1b[2J" + record["name"]
        bad["city"] = "\u202eAccra\r\nX-Injected: 1"
    return bad


# --- Replies -----------------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    drop: bool = False  # announce the whole body, send half, close


def _json_reply(status: int, payload: dict, **kwargs) -> _Reply:
    return _Reply(status, json.dumps(payload, ensure_ascii=False).encode(), **kwargs)


def _error_reply(status: int, message: str) -> _Reply:
    return _json_reply(status, {"error": message})


def _single(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def _whole_number(params: dict[str, list[str]], name: str, *, default: int, minimum: int) -> int:
    text = _single(params, name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"[0-9]+", text) or int(text) < minimum:
        raise BadRequest(f"{name}={text!r} must be a whole number >= {minimum}")
    return int(text)


# --- The simulator -----------------------------------------------------------------


class SabitoSimulator:
    def __init__(
        self,
        *,
        customers_per_business: int = 500,
        businesses: int = 2,
        seed: int = 42,
        api_key: str = "sim-key",
        host: str = "127.0.0.1",
        port: int = 0,
        max_page_size: int = 1000,
        verbose: bool = False,
        epoch: datetime | None = None,
    ):
        if customers_per_business < 0 or businesses < 1 or max_page_size < 1:
            raise ValueError("need customers_per_business >= 0, businesses >= 1 and max_page_size >= 1")
        self.customers_per_business = customers_per_business
        self.business_count = businesses
        self.seed = seed
        self.api_key = api_key
        self.host = host
        self.port = port
        self.max_page_size = max_page_size
        self.verbose = verbose
        self.epoch = epoch or default_epoch()
        if self.epoch.tzinfo is None:
            self.epoch = self.epoch.replace(tzinfo=timezone.utc)
        self._epoch_ms = (self.epoch - UNIX_EPOCH) // timedelta(milliseconds=1)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _SimulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._reset_state()

    def _reset_state(self) -> None:
        self._businesses = {
            business.id: business
            for business in (
                _generate_business(
                    seed=self.seed, index=index, customers=self.customers_per_business, epoch_ms=self._epoch_ms
                )
                for index in range(self.business_count)
            )
        }
        self._control_rng = random.Random(f"sabito-simulator-control:{self.seed}")
        self._last_now_ms = self._epoch_ms
        self._faults = Faults()
        self._fault_rng = random.Random(self.seed)
        self._stats = self._empty_stats()

    @staticmethod
    def _empty_stats() -> dict:
        return {
            "requests": 0,
            "customerRequests": 0,
            "recordsServed": 0,
            "statuses": Counter(),
            "faultsInjected": Counter(),
            "driftEditedIds": [],
        }

    # -- lifecycle

    def bind(self) -> SabitoSimulator:
        """Opens the listening socket, so `url` is known before serving starts."""
        if self._server is None:
            self._stopping.clear()
            self._server = _SimulatorHTTPServer((self.host, self.port), self)
            self.port = self._server.server_address[1]
        return self

    def start(self) -> SabitoSimulator:
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")
        self.bind()
        # A short poll interval keeps stop() quick: shutdown() waits for the next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sabito-simulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serves until Ctrl-C (KeyboardInterrupt), started and stopped as `with` does."""
        with self:
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes handlers sleeping for a timeout or slow fault
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._close()

    def _close(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.server_close()
            self._server = None
        # Keep-alive connections would otherwise pin a handler thread each until the
        # client hangs up, long after the test that opened them is over.
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # `with SabitoSimulator(...) as simulator:` is how everything starts one (the tests'
    # fixtures, the benchmark, the demo's `manage.py sabito_simulator`): serving in a
    # background thread for the block, stopped however the block ends.
    def __enter__(self) -> SabitoSimulator:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not listening; call start() (or bind()) first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- data, for Python callers

    @property
    def business_ids(self) -> list[str]:
        with self._lock:
            return list(self._businesses)

    @property
    def business_names(self) -> dict[str, str]:
        with self._lock:
            return {business.id: business.name for business in self._businesses.values()}

    def businesses(self) -> list[dict]:
        with self._lock:
            return [
                {"id": business.id, "name": business.name, "customers": len(business.entries)}
                for business in self._businesses.values()
            ]

    def customers(self, business_id: str) -> list[dict]:
        """Every current record of the business, as served, in served order."""
        with self._lock:
            _, _, blobs = self._business(business_id).index()
            blobs = list(blobs)
        return [json.loads(blob) for blob in blobs]

    def edit(self, business_id: str, count: int) -> list[str]:
        """Renames and re-phones `count` random customers and stamps them with the
        simulator's now, which moves them to the end of the order."""
        _check_count(count)
        with self._lock:
            business = self._business(business_id)
            chosen = self._control_rng.sample(list(business.entries), min(count, len(business.entries)))
            return self._edit_locked(business, chosen, self._control_rng)

    def add(self, business_id: str, count: int) -> list[str]:
        _check_count(count)
        with self._lock:
            business = self._business(business_id)
            now_ms = self._now_ms()
            ids = []
            for _ in range(count):
                record = _new_customer(self._control_rng, seq=business.next_seq, updated_ms=now_ms, created_ms=now_ms)
                business.next_seq += 1
                business.put(record, now_ms)
                ids.append(record["id"])
            return ids

    def delete(self, business_id: str, count: int) -> list[str]:
        """Hard-deletes: the records vanish without a trace in any updatedAfter feed."""
        _check_count(count)
        with self._lock:
            business = self._business(business_id)
            chosen = self._control_rng.sample(list(business.entries), min(count, len(business.entries)))
            for customer_id in chosen:
                business.remove(customer_id)
            return chosen

    def reset(self) -> None:
        """Back to the seeded data, with no faults and zeroed stats."""
        with self._lock:
            self._reset_state()

    def set_faults(self, faults: Faults | dict | None) -> None:
        faults = Faults.from_value(faults)
        with self._lock:
            self._faults = faults
            self._fault_rng = random.Random(self.seed if faults.seed is None else faults.seed)
            for business in self._businesses.values():
                business.pages_served = 0
                business.drift_done = False

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    @property
    def stats(self) -> dict:
        with self._lock:
            return {
                **self._stats,
                "statuses": {str(status): n for status, n in sorted(self._stats["statuses"].items())},
                "faultsInjected": dict(sorted(self._stats["faultsInjected"].items())),
                "driftEditedIds": list(self._stats["driftEditedIds"]),
            }

    def _business(self, business_id: str) -> _Business:
        try:
            return self._businesses[business_id]
        except KeyError:
            raise UnknownBusinessError(business_id) from None

    def _now_ms(self) -> int:
        # Strictly increasing, so an edit always lands after every existing record even
        # if the wall clock steps back or two edits fall in one millisecond.
        now_ms = time.time_ns() // 1_000_000
        self._last_now_ms = max(now_ms, self._last_now_ms + 1)
        return self._last_now_ms

    def _edit_locked(self, business: _Business, customer_ids: list[str], rng: random.Random) -> list[str]:
        now_ms = self._now_ms()
        for customer_id in customer_ids:
            business.put(_edited(business.record(customer_id), rng, updated_ms=now_ms), now_ms)
        return list(customer_ids)

    # -- HTTP: /api/customers

    def _customers_reply(self, query: str, api_key: str | None) -> _Reply:
        if api_key is None or not hmac.compare_digest(api_key.encode(), self.api_key.encode()):
            return self._counted(_error_reply(401, "invalid API key"))
        params = parse_qs(query, keep_blank_values=True)
        try:
            business_id = _single(params, "businessId")
            if not business_id:
                raise BadRequest("businessId is required")
            limit = _whole_number(params, "limit", default=DEFAULT_LIMIT, minimum=1)
            offset = _whole_number(params, "offset", default=0, minimum=0)
            updated_after = _single(params, "updatedAfter")
            after_ms = parse_timestamp_ms(updated_after) if updated_after else None
        except BadRequest as exc:
            return self._counted(_error_reply(400, str(exc)))

        with self._lock:
            business = self._businesses.get(business_id)
            if business is None:
                return self._counted_locked(_error_reply(404, "unknown business"))
            faults = self._faults
            fault = self._draw_fault_locked(faults)
            if fault == "error":
                return self._counted_locked(_error_reply(500, "internal server error"), delay=faults.slow_seconds)
            if fault == "rate_limit":
                reply = _json_reply(
                    429,
                    {"error": "rate limit exceeded", "retryAfter": faults.retry_after},
                    headers=(("Retry-After", str(faults.retry_after)),),
                )
                return self._counted_locked(reply, delay=faults.slow_seconds)
            if fault == "garbage":
                return self._counted_locked(_Reply(200, GARBAGE_BODY, "text/html"), delay=faults.slow_seconds)

            page_size = min(limit, faults.max_page_size or self.max_page_size)
            start = business.view_start(after_ms) + offset
            _, _, blobs = business.index()
            page = blobs[start : start + page_size]
            if faults.bad_records_rate:
                page = self._spoil_locked(page, faults.bad_records_rate)
            body = b'{"data":[' + b",".join(page) + b"]}"
            business.pages_served += 1
            self._drift_locked(business, faults, after_ms)

            if fault == "truncated":
                return self._counted_locked(_Reply(200, body[: len(body) // 2]), delay=faults.slow_seconds)
            if fault == "drop":
                return self._counted_locked(_Reply(200, body, drop=True), delay=faults.slow_seconds)
            delay = faults.slow_seconds + (faults.timeout_seconds if fault == "timeout" else 0)
            if fault is None:
                self._stats["recordsServed"] += len(page)
            return self._counted_locked(_Reply(200, body), delay=delay)

    def _draw_fault_locked(self, faults: Faults) -> str | None:
        if not any(getattr(faults, name) for name in Faults.EXCLUSIVE_RATES):
            return None
        draw = self._fault_rng.random()
        for name in Faults.EXCLUSIVE_RATES:
            rate = getattr(faults, name)
            if draw < rate:
                kind = name.removesuffix("_rate")
                self._stats["faultsInjected"][kind] += 1
                return kind
            draw -= rate
        return None

    def _spoil_locked(self, page: list[bytes], rate: float) -> list[bytes]:
        spoiled = []
        for blob in page:
            if self._fault_rng.random() < rate:
                blob = json.dumps(_hostile_variant(json.loads(blob), self._fault_rng)).encode()
                self._stats["faultsInjected"]["bad_record"] += 1
            spoiled.append(blob)
        return spoiled

    def _drift_locked(self, business: _Business, faults: Faults, after_ms: int | None) -> None:
        drift = faults.edit_during_paging
        if drift is None or business.drift_done or business.pages_served < drift.after_requests:
            return
        business.drift_done = True
        # The oldest records of the pager's own view are behind its offset, so moving
        # them to the end shifts the records it has not read yet back past it.
        start = business.view_start(after_ms)
        _, ids, _ = business.index()
        edited = self._edit_locked(business, ids[start : start + drift.count], self._fault_rng)
        self._stats["faultsInjected"]["drift_edit"] += len(edited)
        self._stats["driftEditedIds"].extend(edited)

    def _counted(self, reply: _Reply, *, customer_request: bool = True) -> _Reply:
        with self._lock:
            return self._counted_locked(reply, customer_request=customer_request)

    def _counted_locked(self, reply: _Reply, *, delay: float = 0.0, customer_request: bool = True) -> _Reply:
        self._stats["requests"] += 1
        if customer_request:
            self._stats["customerRequests"] += 1
            self._stats["statuses"][reply.status] += 1
        reply.delay += delay
        return reply

    # -- HTTP: /_simulator/*

    def _control_reply(self, method: str, path: str, query: str, body: bytes) -> _Reply:
        try:
            reply = self._control(method, path, parse_qs(query), body)
        except UnknownBusinessError:
            reply = _error_reply(404, "unknown business")
        except ValueError as exc:  # BadRequest and invalid Faults alike
            reply = _error_reply(400, str(exc))
        return self._counted(reply, customer_request=False)

    def _control(self, method: str, path: str, params: dict, body: bytes) -> _Reply:
        action = path.removeprefix("/_simulator/").strip("/")
        routes = {
            ("GET", "businesses"): lambda: {"data": self.businesses()},
            ("GET", "customers"): lambda: {"data": self.customers(_required(params, "businessId"))},
            ("POST", "edit"): lambda: {"ids": self.edit(*_business_and_count(body))},
            ("POST", "add"): lambda: {"ids": self.add(*_business_and_count(body))},
            ("POST", "delete"): lambda: {"ids": self.delete(*_business_and_count(body))},
            ("GET", "faults"): lambda: {"faults": self.faults.to_dict()},
            ("POST", "faults"): lambda: self._set_faults_from(body),
            ("GET", "stats"): lambda: self.stats,
            ("POST", "reset"): self._reset_from_http,
        }
        handler = routes.get((method, action))
        if handler is None:
            if any(route_action == action for _, route_action in routes):
                return _error_reply(405, f"{method} is not allowed on {path}")
            return _error_reply(404, f"no simulator endpoint {path}")
        return _json_reply(200, handler())

    def _reset_from_http(self) -> dict:
        self.reset()
        return {"reset": True}

    def _set_faults_from(self, body: bytes) -> dict:
        self.set_faults(_json_object(body))
        return {"faults": self.faults.to_dict()}


def _check_count(count) -> None:
    if not _is_int(count) or count < 0:
        raise ValueError(f"count must be a whole number >= 0, got {count!r}")


def _required(params: dict, name: str) -> str:
    value = _single(params, name)
    if not value:
        raise BadRequest(f"{name} is required")
    return value


def _json_object(body: bytes) -> dict:
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise BadRequest("the request body must be a JSON object")
    return payload


def _business_and_count(body: bytes) -> tuple[str, int]:
    payload = _json_object(body)
    business_id = payload.get("businessId")
    if not isinstance(business_id, str) or not business_id:
        raise BadRequest('"businessId" is required')
    count = payload.get("count", 1)
    _check_count(count)
    return business_id, count


# --- HTTP plumbing ------------------------------------------------------------------


class _SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, simulator: SabitoSimulator):
        self.simulator = simulator
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _SabitoRequestHandler)

    def server_bind(self):
        # HTTPServer.server_bind resolves the host's FQDN, a DNS round trip that can
        # take seconds in a sandbox; nothing here uses the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)) and not self.simulator.verbose:
            return  # clients hanging up mid-response is what the fault modes are for
        super().handle_error(request, client_address)


class _SabitoRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every reply carries Content-Length
    server_version = "SabitoSimulator/1.0"
    # Headers and a page body leave in one send, and Nagle never holds back the tail
    # of a response waiting for a delayed ACK (a 40 ms stall per keep-alive request).
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    server: _SimulatorHTTPServer

    def setup(self):
        super().setup()
        simulator = self.server.simulator
        with simulator._connections_lock:
            simulator._connections.add(self.connection)

    def finish(self):
        simulator = self.server.simulator
        with simulator._connections_lock:
            simulator._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format, *args):
        if self.server.simulator.verbose:
            super().log_message(format, *args)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        simulator = self.server.simulator
        try:
            body = self._read_body()
        except BadRequest as exc:
            self.close_connection = True  # the unread body would desynchronise the stream
            self._send(_error_reply(400, str(exc)))
            return
        target = urlsplit(self.path)
        if target.path == "/api/customers":
            if method == "GET":
                reply = simulator._customers_reply(target.query, self.headers.get("X-API-Key"))
            else:
                reply = _error_reply(405, f"{method} is not allowed on /api/customers")
        elif target.path.startswith("/_simulator/"):
            reply = simulator._control_reply(method, target.path, target.query, body)
        else:
            reply = _error_reply(404, f"no endpoint {target.path}")
        self._send(reply)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        if not length.isdigit() or int(length) > MAX_CONTROL_BODY:
            raise BadRequest(f"Content-Length {length!r} is invalid or over {MAX_CONTROL_BODY} bytes")
        return self.rfile.read(int(length))

    def _send(self, reply: _Reply) -> None:
        if reply.delay and self.server.simulator._stopping.wait(reply.delay):
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body[: len(reply.body) // 2] if reply.drop else reply.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (read timeout) first
            return
        if reply.drop:
            self.close_connection = True


# --- Command line -------------------------------------------------------------------


def add_simulator_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by `python -m sabito_sync.simulator` and `manage.py sabito_simulator`."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port; 0 picks a free one (default: 8001)")
    parser.add_argument("--customers", type=int, default=500, help="customers per business (default: 500)")
    parser.add_argument("--businesses", type=int, default=2, help="number of businesses (default: 2)")
    parser.add_argument("--seed", type=int, default=42, help="data seed (default: 42)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SABITO_API_KEY") or "sim-key",
        help="the X-API-Key clients must send (default: $SABITO_API_KEY, else sim-key)",
    )
    parser.add_argument("--max-page-size", type=int, default=1000, help="cap on limit (default: 1000)")


def simulator_from_options(options, *, verbose: bool) -> SabitoSimulator:
    return SabitoSimulator(
        customers_per_business=options["customers"],
        businesses=options["businesses"],
        seed=options["seed"],
        api_key=options["api_key"],
        host=options["host"],
        port=options["port"],
        max_page_size=options["max_page_size"],
        verbose=verbose,
    )


def describe_businesses(simulator: SabitoSimulator) -> str:
    return ", ".join(f"{business_id} ({name})" for business_id, name in simulator.business_names.items())


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Prints the URL on the first line of stdout and the business ids, space
    separated, on the second (both flushed) so a parent process can read them."""
    parser = argparse.ArgumentParser(
        prog="python -m sabito_sync.simulator",
        description="Serve a simulated Sabito API (GET /api/customers) until Ctrl-C.",
    )
    add_simulator_arguments(parser)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    options = vars(parser.parse_args(argv))
    try:
        simulator = simulator_from_options(options, verbose=options["verbose"]).bind()
    except (OSError, ValueError) as exc:
        parser.exit(2, f"Cannot start the Sabito simulator on {options['host']}:{options['port']}: {exc}\n")
    print(simulator.url, flush=True)
    print(" ".join(simulator.business_ids), flush=True)
    description = f"Sabito simulator on {simulator.url}: {describe_businesses(simulator)}. Ctrl-C to stop."
    print(description, file=sys.stderr, flush=True)
    # A parent's terminate() then ends serving cleanly instead of killing mid-write.
    signal.signal(signal.SIGTERM, _interrupt)
    simulator.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
