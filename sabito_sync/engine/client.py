"""A client for Sabito's customer feed that knows HTTP and nothing of Django.

It turns `GET /api/customers` into `CustomerPage`s and every failure into a
`SabitoError` whose message an operator can act on. Records are handed over as
received: validating them is the sync service's job, not the transport's. A caller
that knows what a usual record looks like may say so (`record_type`, a msgspec
Struct): a page whose records all fit it is decoded straight into it, in C.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import GenericAlias, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

import msgspec
import orjson
import requests

logger = logging.getLogger("sabito_sync.client")

CUSTOMERS_PATH = "/api/customers"
MAX_BACKOFF_SECONDS = 30.0
JITTER_FRACTION = 0.1
BODY_EXCERPT_CHARS = 80
REDACTED = "[redacted]"
# Read a body in pieces of this size: larger than almost every page, small enough that
# a body past the limit is refused having taken at most this much more.
READ_CHUNK_BYTES = 4 * 1024 * 1024

# requests raises these for a refused or dropped connection, a connect or read
# timeout, and a body cut off or garbled mid-read. All of them say nothing about
# whether the request was acceptable, so asking again is the right answer.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
RETRY_AFTER_STATUSES = frozenset({429, 503})


class SabitoError(Exception):
    """Base of every failure the client reports. Its message names the business and,
    where one was asked for, the offset; it carries nothing else, so it survives
    pickling (a Celery result backend rebuilds it from its message alone)."""

    retryable: bool = False


class SabitoAuthError(SabitoError):
    """Sabito refused the API key (401/403); asking again cannot help."""

    retryable = False


class SabitoUnavailableError(SabitoError):
    """Sabito kept failing transiently after every retry; a later run may succeed."""

    retryable = True


class SabitoResponseError(SabitoError):
    """Sabito answered, but with something the sync cannot use."""

    retryable = False


class SabitoResponseTooLarge(SabitoResponseError):
    """An answer larger than the client takes, as sent or decompressed: never retried
    (the same request would bring the same answer)."""


AnySabitoError = TypeVar("AnySabitoError", bound=SabitoError)


@dataclass(frozen=True)
class CustomerPage:
    offset: int
    # The records as parsed JSON; or, asked for a `record_type` and every record of
    # the page fits it, as instances of that type.
    records: list[Any]
    # Where the pager stands after this page, as plain JSON data: handed back as
    # `iter_customer_pages(start=...)`, it carries on right after this page.
    resume_from: dict[str, Any] | None = None
    # Asked for a `fingerprint_key` and the records typed: each record's fingerprint,
    # the keyed hash of its JSON exactly as received (32 hex digits). Equal
    # fingerprints, byte for byte the same record. None otherwise.
    fingerprints: list[str] | None = None


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. "2025-12-14T12:00:00.000Z": Sabito's
    `updatedAfter`, and so also the stored watermark that becomes it.

    Microseconds are truncated, not rounded: rounding up could move the filter
    past a record updated in that same millisecond and skip it for good.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"timestamps must be timezone-aware; got naive {moment.isoformat()} "
            "whose meaning depends on the server's clock"
        )
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), or None."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until_http_date(text, now=now)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _seconds_until_http_date(text: str, *, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT even when the zone is spelled "-0000"
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _record_key(record: Any) -> Any:
    """What identifies a record across pages: its id, or (for a record without a
    usable id, which the sync will reject) the record itself, as text.

    The keys end up in checkpoints (`resume_from`), so their form must not change."""
    if type(record) is dict:  # parsed JSON holds exact types; every page's every record comes here
        record_id = record.get("id")
        if type(record_id) is str or type(record_id) is int:  # not bool, which is an int too
            return ("id", record_id)
    elif isinstance(record, msgspec.Struct):  # a `record_type`'s, whose id is a string
        return ("id", record.id)  # type: ignore[attr-defined]  # not Struct's: every `record_type` has one
    elif isinstance(record, dict):
        record_id = record.get("id")
        if isinstance(record_id, (str, int)) and not isinstance(record_id, bool):
            return ("id", record_id)
    return ("raw", json.dumps(record, sort_keys=True, default=str))


def _record_ids(records: list[Any]) -> list[Any]:
    return [_record_key(record) for record in records]


def environment_session(base_url: str) -> requests.Session:
    """A session that reads the environment once: the proxy for `base_url`
    (`HTTP(S)_PROXY`, `ALL_PROXY`, `NO_PROXY`) and the CA bundle
    (`REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`), as requests would.

    Left to itself requests reads them again, twice per request, walking the
    whole environment and looking for a .netrc each time: a third of this client's
    CPU on a fast feed. A client lives for one sync, so reading them when it is
    made is as current as anyone needs. (Credentials from a .netrc are not
    wanted anyway: Sabito is authenticated by X-API-Key.)"""
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    return session


class SabitoClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        page_size: int = 100,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_retries: int = 4,
        retry_backoff: float = 1.0,
        max_retry_after: float = 60.0,
        max_pages: int = 100_000,
        overlap_records: int = 10,
        max_restarts: int = 3,
        max_response_bytes: int = 32 * 1024 * 1024,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        if max_retries < 0:
            raise ValueError(f"max_retries must not be negative, got {max_retries}")
        if max_pages < 1:
            raise ValueError(f"max_pages must be at least 1, got {max_pages}")
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._page_size = page_size
        self._timeout = (connect_timeout, read_timeout)
        self._max_retries = max_retries
        self._retry_backoff = retry_backoff
        self._max_retry_after = max_retry_after
        self._max_pages = max_pages
        self._overlap_records = overlap_records
        self._max_restarts = max_restarts
        self._max_response_bytes = max_response_bytes
        # A session handed in belongs to the caller, who may share it; only
        # close what this client opened.
        self._owns_session = session is None
        self._session = session if session is not None else environment_session(self._base_url)
        self._sleep = sleep
        # What requests would otherwise work out again for every one of a sync's
        # thousand requests (merging the session's settings, the environment's and
        # the call's; preparing headers, cookies and auth; choosing the adapter) is
        # worked out here, once: every request of the feed differs only in its query.
        # The session lends its configuration as it stands now; requests then go
        # straight to its adapter, which follows no redirect, runs no response hook
        # and keeps no cookie Sabito sets (the key alone authenticates the feed).
        url = f"{self._base_url}{CUSTOMERS_PATH}"
        # On this request rather than on the session, so a session the caller
        # shares never carries the key to anyone else.
        headers = {"X-API-Key": self._api_key, "Accept": "application/json"}
        self._request = self._session.prepare_request(requests.Request("GET", url, headers=headers))
        self._adapter = self._session.get_adapter(url)
        settings = self._session.merge_environment_settings(url, {}, True, None, None)
        self._send_options = {
            "stream": True,
            "timeout": self._timeout,
            "verify": settings["verify"],
            "cert": settings["cert"],
            "proxies": settings["proxies"],
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._base_url!r}, page_size={self._page_size})"

    def __enter__(self) -> SabitoClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def iter_customer_pages(
        self,
        *,
        business_id: str,
        updated_after: datetime | None = None,
        start: dict[str, Any] | None = None,
        record_type: type[msgspec.Struct] | None = None,
        fingerprint_key: bytes | None = None,
    ) -> Iterator[CustomerPage]:
        """Every record of the feed, in order, in pages of records not yet yielded;
        from the beginning, or from `start` (a page's `resume_from`). With
        `record_type` (a msgspec Struct with a string `id`), each page whose records
        all fit it holds them as its instances, and with `fingerprint_key` too, their
        fingerprints (see `fetch_customer_page`).

        Only a window with nothing new ends the feed: a server that caps `limit`
        returns short pages long before the end, and treating a short page as the
        last would silently truncate the sync.

        Sabito pages by offset over a feed ordered by update time. A record edited
        while we page moves to the end, and every record after its old place moves
        back by one: a plain pager then skips one record per edit, and that record,
        being older than the new watermark, would never reach us. So each request
        re-reads the last few records already received (the tail): if any of them is
        in the window, we have not lost our place, and every record of the window
        outside the tail is new, wherever drift put it. If none is (more drift than
        the overlap covers), the scan starts over. A record may so be yielded twice
        (it moved from behind us to the end); the sync processes it once.
        """
        offset = 0  # how far into the feed we believe we have read
        tail: list[Any] = []  # keys of the last records yielded, oldest first
        if start is not None:
            # The tail is what lets a resumed scan find its place again, drift or not.
            offset, tail = int(start["offset"]), [tuple(key) for key in start["tail"]]
        previous_window: list[Any] | None = None
        previous_start = 0
        restarts = 0
        for pages_yielded in range(self._max_pages + 1):
            window_start = max(0, offset - len(tail))
            page = self.fetch_customer_page(
                business_id=business_id,
                updated_after=updated_after,
                offset=window_start,
                limit=self._page_size + (offset - window_start),
                record_type=record_type,
                fingerprint_key=fingerprint_key,
            )
            window = _record_ids(page.records)
            # The same records again from a different offset: the server ignores
            # the offset, and paging on would loop or silently stop short.
            if window and window == previous_window and window_start != previous_start:
                raise self._error(
                    SabitoResponseError,
                    f"Sabito served the same page twice for business {business_id}: offset {window_start} "
                    f"returned the same {len(window)} records as the request before it; stopping so the "
                    "sync does not loop forever",
                )
            tail_keys = set(tail)
            if tail and tail_keys.isdisjoint(window):
                if restarts == self._max_restarts:
                    raise self._error(
                        SabitoResponseError,
                        f"Sabito's customer feed for business {business_id} kept changing order while being "
                        f"paged (lost our place {restarts + 1} times near offset {offset}); try again later",
                    )
                restarts += 1
                logger.warning(
                    "Sabito feed for business %s moved more than %d records near offset %d; re-reading from the start",
                    business_id,
                    len(tail),
                    offset,
                )
                offset, tail, previous_window, previous_start = 0, [], None, 0
                continue
            new_positions = [index for index, key in enumerate(window) if key not in tail_keys]
            if not new_positions:
                return
            if pages_yielded == self._max_pages:
                raise self._error(
                    SabitoResponseError,
                    f"Sabito's customer feed for business {business_id} did not end within "
                    f"{self._max_pages} pages (still returning records at offset {offset}); "
                    "stopping at the page bound",
                )
            if window[: len(tail)] != tail:
                logger.info(
                    "Sabito feed for business %s changed order near offset %d while paging; recovered by overlap",
                    business_id,
                    offset,
                )
            new_records = [page.records[index] for index in new_positions]
            fingerprints = page.fingerprints
            if fingerprints is not None and len(new_positions) != len(fingerprints):
                fingerprints = [fingerprints[index] for index in new_positions]
            previous_window, previous_start = window, window_start
            offset = window_start + len(window)
            # Keep at most half of what a window brings, so that a server capping
            # `limit` below our overlap still leaves room for new records.
            keep = min(self._overlap_records, max(1, len(window) // 2))
            tail = (tail + [window[index] for index in new_positions[-keep:]])[-keep:]
            yield CustomerPage(
                offset=window_start + new_positions[0],
                records=new_records,
                resume_from={"offset": offset, "tail": [list(key) for key in tail]},
                fingerprints=fingerprints,
            )

    def fetch_customer_page(
        self,
        *,
        business_id: str,
        updated_after: datetime | None,
        offset: int,
        limit: int,
        record_type: type[msgspec.Struct] | None = None,
        fingerprint_key: bytes | None = None,
    ) -> CustomerPage:
        """One page of the feed. Its records are `record_type` instances if one is given
        and every record fits it (a JSON object with the Struct's fields of its types;
        others ignored), and parsed JSON otherwise: the caller can tell usual pages
        from the rest by their records' type, and judges the rest as before.

        A typed page asked for with a `fingerprint_key` (up to 64 bytes) also carries
        each record's fingerprint: its keyed BLAKE2b (16 bytes, in hex) of the record's
        JSON as it came, every byte of it, keys the Struct ignores included. A caller
        that stored what a record became can so recognise the very same record again
        without reading it."""
        params: dict[str, str | int] = {"businessId": business_id, "limit": limit, "offset": offset}
        if updated_after is not None:
            params["updatedAfter"] = format_timestamp(updated_after)
        content, records = self._fetch_records(params, business_id=business_id, offset=offset, record_type=record_type)
        fingerprints = None
        if fingerprint_key is not None and record_type is not None and records and type(records[0]) is record_type:
            fingerprints = record_fingerprints(content, key=fingerprint_key)
        return CustomerPage(offset=offset, records=records, fingerprints=fingerprints)

    def _fetch_records(
        self, params: dict[str, str | int], *, business_id: str, offset: int, record_type: type[msgspec.Struct] | None
    ) -> tuple[bytes, list[Any]]:
        """The page's body and its records."""
        # Hand-written rather than urllib3's Retry: Retry only sees the request
        # and the status line, but a body dropped mid-read, cut short, or replaced
        # by a proxy's error page is just as transient.
        attempts = 1 + self._max_retries
        for attempt in range(attempts):
            malformed: SabitoResponseError | None = None
            try:
                response, body = self._send(params)
            except TRANSIENT_ERRORS as exc:
                cause, wait = self._describe_exception(exc), self._backoff(attempt)
            else:
                if _is_transient_status(response.status_code):
                    cause, wait = f"HTTP {response.status_code}", self._wait_after(response, attempt)
                else:
                    self._check_status(response, body, business_id=business_id, offset=offset)
                    try:
                        return body, self._records(
                            response, body, business_id=business_id, offset=offset, record_type=record_type
                        )
                    except SabitoResponseError as exc:
                        malformed, cause, wait = exc, str(exc), self._backoff(attempt)
            if attempt + 1 == attempts:
                if malformed is not None:
                    raise malformed
                raise self._error(
                    SabitoUnavailableError,
                    f"Sabito API unavailable for business {business_id} at offset {offset} "
                    f"after {attempts} attempts: {cause}",
                )
            logger.warning(
                "Sabito request for business %s at offset %s failed (attempt %s of %s): %s; retrying in %.2fs",
                business_id,
                offset,
                attempt + 1,
                attempts,
                self._redact(cause),
                wait,
            )
            self._sleep(wait)
        raise AssertionError("unreachable: the loop either returns or raises")

    def _send(self, params: dict[str, str | int]) -> tuple[requests.Response, bytes]:
        """The response and its whole body."""
        started = time.monotonic()
        request = self._request.copy()
        request.url = f"{self._request.url}?{urlencode(params)}"
        # The adapter, not the session: a session would follow a redirect, and
        # urllib3 strips only Cookie and Authorization on a cross-host redirect,
        # so following one would hand X-API-Key to the new host. The adapter
        # returns a 3xx as it is, for `_check_status` to report.
        response = self._adapter.send(request, **self._send_options)
        try:
            # Read the body here, inside the retry loop, so a connection that
            # drops mid-body is retried like one that never connected. In one read
            # (chunk_size None) rather than `content`'s 10 KB chunks: a page is a
            # few of those, and each read is a trip through urllib3 and a socket
            # call that lets another thread take the interpreter. Through
            # iter_content, so requests still turns urllib3's errors into its own.
            body = self._read_body(response, params)
        except BaseException:
            response.close()
            raise
        logger.debug(
            "Sabito GET customers business=%s offset=%s limit=%s -> HTTP %s in %.3fs",
            params["businessId"],
            params["offset"],
            params["limit"],
            response.status_code,
            time.monotonic() - started,
        )
        return response, body

    def _read_body(self, response: requests.Response, params: dict[str, str | int]) -> bytes:
        """The whole body, read in pieces of at most READ_CHUNK_BYTES and refused past
        `max_response_bytes`, counted as sent and as decompressed: a compression bomb or
        a body without end costs no more memory than the limit."""
        limit = self._max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(params, f"it declares {int(declared):,} bytes")
        chunks, size = [], 0
        # A page is one piece (or a few): as quick as one read of the whole body.
        for chunk in response.iter_content(chunk_size=READ_CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                raise self._too_large(params, f"over {limit:,} bytes decompressed")
            if response.raw.tell() > limit:
                raise self._too_large(params, f"over {limit:,} bytes as sent")
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self, params: dict[str, str | int], how: str) -> SabitoResponseTooLarge:
        return self._error(
            SabitoResponseTooLarge,
            f"Sabito's answer for business {params['businessId']} at offset {params['offset']} is too large: "
            f"{how}; at most SABITO_MAX_RESPONSE_BYTES={self._max_response_bytes} are read.",
        )

    def _backoff(self, attempt: int) -> float:
        base: float = min(MAX_BACKOFF_SECONDS, self._retry_backoff * 2**attempt)
        # Jitter keeps many workers that failed together from retrying in lockstep.
        return base + random.uniform(0, base * JITTER_FRACTION)

    def _wait_after(self, response: requests.Response, attempt: int) -> float:
        if response.status_code in RETRY_AFTER_STATUSES:
            asked = parse_retry_after(response.headers.get("Retry-After"), now=datetime.now(UTC))
            if asked is not None:
                # A server asking for an hour must not stall a worker for an hour.
                return min(asked, self._max_retry_after)
        return self._backoff(attempt)

    def _check_status(self, response: requests.Response, body: bytes, *, business_id: str, offset: int) -> None:
        status = response.status_code
        if status in (401, 403):
            raise self._error(
                SabitoAuthError,
                f"Sabito rejected the API key (HTTP {status}) for business {business_id}",
            )
        if 300 <= status < 400:
            location = response.headers.get("Location") or "an unspecified location"
            raise self._error(
                SabitoResponseError,
                f"Sabito redirected the request for business {business_id} at offset {offset} "
                f"(HTTP {status}) to {location}; not followed so the API key is not sent elsewhere",
            )
        if not 200 <= status < 300:
            raise self._error(
                SabitoResponseError,
                f"Sabito refused the request for business {business_id} at offset {offset} "
                f"with HTTP {status}: {self._excerpt(body)}",
            )

    def _records(
        self,
        response: requests.Response,
        content: bytes,
        *,
        business_id: str,
        offset: int,
        record_type: type[msgspec.Struct] | None = None,
    ) -> list[Any]:
        if record_type is not None:
            typed = _typed_records(content, record_type)
            if typed is not None:
                return typed
        try:
            body = _parse_json(content)
        except (ValueError, RecursionError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
            raise self._error(
                SabitoResponseError,
                f"Sabito answered business {business_id} at offset {offset} with a body that is not "
                f"JSON (HTTP {response.status_code}): {self._excerpt(content)}",
            ) from None
        records = body.get("data") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise self._error(
                SabitoResponseError,
                f"Sabito answered business {business_id} at offset {offset} with JSON that has no "
                f'"data" list: {self._excerpt(content)}',
            )
        return records

    def _excerpt(self, content: bytes) -> str:
        # Redact the whole body before cutting it: a cut first could leave half
        # of an echoed key in the excerpt, where the full key no longer matches.
        text = " ".join(self._redact(content.decode("utf-8", errors="replace")).split())
        if not text:
            return "(empty body)"
        if len(text) > BODY_EXCERPT_CHARS:
            text = text[:BODY_EXCERPT_CHARS] + "…"
        return repr(text)

    @staticmethod
    def _describe_exception(exc: Exception) -> str:
        return f"{type(exc).__name__}: {str(exc)[:200]}"

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, REDACTED) if self._api_key else text

    def _error(self, kind: type[AnySabitoError], message: str) -> AnySabitoError:
        # Every message passes through here, so a key echoed back by Sabito or
        # a proxy (in a body, a Location, an exception text) never reaches a log.
        return kind(self._redact(message))


def _parse_json(content: bytes) -> Any:
    """A page's JSON: orjson parses a page in half the time json does. What orjson
    refuses gets json's verdict, so every body accepted before still is: json also
    reads NaN and Infinity, lone surrogate escapes, a byte order mark and UTF-16,
    which would otherwise fail the whole page instead of one invalid record in it.
    A body neither reads raises json's ValueError. (orjson reads an integer beyond
    64 bits as a float; either is a number where Sabito sends strings, so invalid.)"""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return json.loads(content)


def _typed_records(content: bytes, record_type: type[msgspec.Struct]) -> list[msgspec.Struct] | None:
    """The page's records as `record_type` instances, decoded and type-checked in one
    pass with no dict made per record; None for any body that is not a JSON object
    whose "data" list holds only records that fit, which then goes `_parse_json`'s way
    (and its verdict, its error messages, are what they always were)."""
    try:
        records: list[msgspec.Struct] = _page_decoder(record_type).decode(content).data
        return records
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):  # deep nesting, even in an ignored key
        return None


@functools.cache
def _page_decoder(record_type: type[msgspec.Struct]) -> msgspec.json.Decoder[Any]:
    # GenericAlias(list, (record_type,)) is list[record_type], which a type checker takes for a type.
    page = msgspec.defstruct(f"{record_type.__name__}Page", [("data", GenericAlias(list, (record_type,)))])
    return msgspec.json.Decoder(page)


# A page's records as their JSON, unparsed: what a fingerprint is taken of.
if TYPE_CHECKING:

    class _RawPage(msgspec.Struct):
        data: list[msgspec.Raw]

else:
    _RawPage = msgspec.defstruct("RawPage", [("data", list[msgspec.Raw])])
_raw_page_decoder = msgspec.json.Decoder(_RawPage)


def record_fingerprints(content: bytes, *, key: bytes) -> list[str]:
    """Each record's fingerprint, in order, for a page body already decoded as typed
    records (so a valid JSON object with a "data" list)."""
    # Keyed once, then copied per record: setting a key up costs a fifth of a record's hash.
    keyed = _keyed_hash(key)
    fingerprints: list[str] = []
    for record in _raw_page_decoder.decode(content).data:
        hash_ = keyed.copy()
        hash_.update(record)
        fingerprints.append(hash_.hexdigest())
    return fingerprints


@functools.lru_cache(maxsize=64)
def _keyed_hash(key: bytes) -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=16, key=key)


def _is_transient_status(status: int) -> bool:
    return status == 429 or 500 <= status < 600
