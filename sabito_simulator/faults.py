"""How the simulator misbehaves on purpose: the fault settings of `/api/customers`
(`Faults`, set over `POST /_simulator/faults` or `set_faults`), the body a broken proxy
answers with, and the hostile records a careless sync would choke on."""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, fields

GARBAGE_BODY = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
    b"<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


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
            if not is_whole_number(value) or value < 1:
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
        if not is_whole_number(self.retry_after) or self.retry_after < 0:
            raise ValueError(f"retry_after must be a whole number of seconds >= 0, got {self.retry_after!r}")
        if self.max_page_size is not None and (not is_whole_number(self.max_page_size) or self.max_page_size < 1):
            raise ValueError(f"max_page_size must be a whole number >= 1 or null, got {self.max_page_size!r}")
        if self.seed is not None and not is_whole_number(self.seed):
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


def is_whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def hostile_variant(record: dict, rng: random.Random) -> dict:
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
