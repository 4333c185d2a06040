"""The simulator's HTTP server: `SabitoSimulator` holds the data and the faults and
answers `/api/customers` and the `/_simulator/` controls; `serving()` runs one from a
background thread for a `with` block, which is how everything starts one."""

from __future__ import annotations

import hmac
import json
import random
import re
import socket
import socketserver
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .data import (
    UNIX_EPOCH,
    Business,
    UnknownBusinessError,
    default_epoch,
    edited_customer,
    generate_business,
    new_customer,
)
from .faults import GARBAGE_BODY, Faults, hostile_variant, is_whole_number
from .journal import ChangeJournal

DEFAULT_LIMIT = 100
MAX_CONTROL_BODY = 1 << 20


class BadRequest(ValueError):
    """A request the simulator refuses with HTTP 400; the message goes to the client."""


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
        moment = moment.replace(tzinfo=UTC)
    return (moment - UNIX_EPOCH) // timedelta(milliseconds=1)


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
        state_file: str | Path | None = None,
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
        # What the controls changed, kept across restarts when a state file is given.
        self._journal = ChangeJournal(state_file) if state_file else None
        if self._journal is not None and epoch is None:
            epoch = self._journal.epoch(self._data_identity())
        self.epoch = epoch or default_epoch()
        if self.epoch.tzinfo is None:
            self.epoch = self.epoch.replace(tzinfo=UTC)
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
                generate_business(
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
        if self._journal is not None:
            for change in self._journal.open(self._data_identity() | {"epochMs": self._epoch_ms}):
                self._replay_locked(change)

    def _data_identity(self) -> dict:
        """What the seeded data depends on: a state file written for other data is not replayed."""
        return {
            "seed": self.seed,
            "customersPerBusiness": self.customers_per_business,
            "businesses": self.business_count,
        }

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
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

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
        return self._change("edit", business_id, count)

    def add(self, business_id: str, count: int) -> list[str]:
        return self._change("add", business_id, count)

    def delete(self, business_id: str, count: int) -> list[str]:
        """Hard-deletes: the records vanish without a trace in any updatedAfter feed."""
        return self._change("delete", business_id, count)

    def _change(self, action: str, business_id: str, count: int) -> list[str]:
        _check_count(count)
        with self._lock:
            business = self._business(business_id)
            now_ms = self._now_ms()
            ids = self._apply_locked(action, business, count, now_ms)
            if self._journal is not None:
                self._journal.append({"action": action, "businessId": business_id, "count": count, "nowMs": now_ms})
            return ids

    def _apply_locked(self, action: str, business: Business, count: int, now_ms: int) -> list[str]:
        """One control change, drawn from the control stream: replaying the same changes
        in the same order gives the same data and leaves the stream where it was."""
        if action == "add":
            ids = []
            for _ in range(count):
                record = new_customer(self._control_rng, seq=business.next_seq, updated_ms=now_ms, created_ms=now_ms)
                business.next_seq += 1
                business.put(record, now_ms)
                ids.append(record["id"])
            return ids
        chosen = self._control_rng.sample(list(business.entries), min(count, len(business.entries)))
        if action == "edit":
            return self._edit_locked(business, chosen, self._control_rng, now_ms=now_ms)
        for customer_id in chosen:
            business.remove(customer_id)
        return chosen

    def _replay_locked(self, change: dict) -> None:
        business = self._businesses.get(change["businessId"])
        if business is None:
            return
        self._last_now_ms = max(self._last_now_ms, change["nowMs"])
        self._apply_locked(change["action"], business, change["count"], change["nowMs"])

    def reset(self) -> None:
        """Back to the seeded data, with no faults and zeroed stats (and, with a state
        file, none of the changes kept in it)."""
        with self._lock:
            if self._journal is not None:
                self._journal.clear()
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

    def _business(self, business_id: str) -> Business:
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

    def _edit_locked(
        self, business: Business, customer_ids: list[str], rng: random.Random, *, now_ms: int | None = None
    ) -> list[str]:
        now_ms = self._now_ms() if now_ms is None else now_ms
        for customer_id in customer_ids:
            business.put(edited_customer(business.record(customer_id), rng, updated_ms=now_ms), now_ms)
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
                blob = json.dumps(hostile_variant(json.loads(blob), self._fault_rng)).encode()
                self._stats["faultsInjected"]["bad_record"] += 1
            spoiled.append(blob)
        return spoiled

    def _drift_locked(self, business: Business, faults: Faults, after_ms: int | None) -> None:
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
    if not is_whole_number(count) or count < 0:
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
        with suppress(OSError):
            super().finish()

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


@contextmanager
def serving(**options) -> Iterator[SabitoSimulator]:
    """A simulator (`SabitoSimulator`'s options) serving from a background thread for
    the `with` block, stopped however the block ends. The one way everything starts
    one: the tests' fixtures, the benchmark, the demo stack's simulator process
    (`manage.py sabito_simulator`) and `python -m sabito_simulator`."""
    simulator = SabitoSimulator(**options).start()
    try:
        yield simulator
    finally:
        simulator.stop()
