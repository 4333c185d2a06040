"""The simulator's data: businesses and their customers, generated from a seed.

The same seed gives the same businesses and customers (ids, emails, names,
timestamps) in any process started on the same UTC day. A business keeps each
record as the exact bytes served, in the order Sabito's feed uses: (updatedAt, id).
"""

from __future__ import annotations

import bisect
import functools
import json
import random
import re
import time
import unicodedata
import uuid
from datetime import UTC, datetime

UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_MS = 24 * 60 * 60 * 1000
HISTORY_MS = 30 * DAY_MS
# A few percent of customers lack a phone or a country, so the sync's "country
# defaults to USA" and "no phone" paths run on every demo and test, not only in theory.
MISSING_PHONE_RATE = 0.03
MISSING_COUNTRY_RATE = 0.03
# Bulk imports give many records the same updatedAt; ties are where a strict
# `updatedAt > watermark` drops records, so the seeded data contains some.
SHARED_TIMESTAMP_RATE = 0.02
BUSINESS_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://sabito.example/simulator/businesses")

FIRST_NAMES = (
    "Ama",
    "Kwame",
    "Kofi",
    "Abena",
    "Yaw",
    "Efua",
    "Akosua",
    "Kojo",
    "John",
    "Mary",
    "José",
    "Zoë",
    "Chloé",
    "Søren",
    "Priya",
    "Wei",
    "Fatima",
    "Liam",
    "Olivia",
    "Noah",
    "Emma",
    "Aisha",
    "Mateo",
    "Seán",
    "Łukasz",
    "Chidi",
    "Ngozi",
    "Hiroshi",
    "Ana",
    "David",
)
LAST_NAMES = (
    "Mensah",
    "Owusu",
    "Boateng",
    "Asante",
    "Osei",
    "Agyeman",
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "García",
    "O'Brien",
    "Nguyen",
    "Patel",
    "Kim",
    "Müller",
    "Okafor",
    "Adeyemi",
    "Rossi",
    "Dubois",
    "van der Berg",
    "Nowak",
    "Tanaka",
    "Silva",
    "Lee",
)
EMAIL_DOMAINS = ("example.com", "example.org", "mail.example.net")  # RFC 2606: never a real inbox
STREETS = (
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Independence Ave",
    "Liberation Rd",
    "High Street",
    "Station Rd",
    "Queen St W",
    "Pine St",
    "Ring Rd Central",
)
# (country as Sabito sends it, phone prefix, digits after the prefix, [(city, state)])
COUNTRIES = (
    ("USA", "+1", 10, (("New York", "NY"), ("Austin", "TX"), ("Seattle", "WA"), ("Denver", "CO"), ("Miami", "FL"))),
    ("Ghana", "+233", 9, (("Accra", "Greater Accra"), ("Kumasi", "Ashanti"), ("Tamale", "Northern"))),
    ("Canada", "+1", 10, (("Toronto", "ON"), ("Vancouver", "BC"))),
    ("United Kingdom", "+44", 10, (("London", "England"), ("Manchester", "England"))),
)
COUNTRY_WEIGHTS = (70, 15, 8, 7)


class UnknownBusinessError(LookupError):
    def __init__(self, business_id: str):
        self.business_id = business_id
        super().__init__(f"unknown business {business_id!r}")


def format_timestamp(ms: int) -> str:
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(ms // 1000))}.{ms % 1000:03d}Z"


def default_epoch() -> datetime:
    """Start of the current UTC day: recent enough that a sync's clock-based watermark
    makes sense, fixed enough that two simulators with one seed serve identical data."""
    now = datetime.now(UTC)
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


def new_customer(rng: random.Random, *, seq: int, updated_ms: int, created_ms: int) -> dict:
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


def edited_customer(record: dict, rng: random.Random, *, updated_ms: int) -> dict:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    country = next((c for c in COUNTRIES if c[0] == record["country"]), COUNTRIES[0])
    return record | {
        "name": f"{first} {last}",
        "phone": _phone(rng, country),
        "updatedAt": format_timestamp(updated_ms),
    }


class Business:
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


def generate_business(*, seed: int, index: int, customers: int, epoch_ms: int) -> Business:
    business = Business(
        business_id=str(uuid.uuid5(BUSINESS_NAMESPACE, f"{seed}:{index}")),
        name="iCreations Global" if index == 0 else f"Business {index + 1}",
    )
    rng = random.Random(f"sabito-simulator:{seed}:{index}")
    updated_ms = epoch_ms - 1
    for seq in range(customers):
        if not (seq and rng.random() < SHARED_TIMESTAMP_RATE):
            updated_ms = epoch_ms - 1 - rng.randrange(HISTORY_MS)
        created_ms = updated_ms - rng.randrange(3 * HISTORY_MS)
        business.put(new_customer(rng, seq=seq, updated_ms=updated_ms, created_ms=created_ms), updated_ms)
    business.next_seq = customers
    business.index()  # sort now, not inside the first request
    return business
