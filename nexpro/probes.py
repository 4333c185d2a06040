"""The probes' own listener in every gunicorn worker, beside the API's.

A worker serves one API request at a time (or `GUNICORN_THREADS`), so a probe sent to
the API's port waits behind every request queued before it: under load, probes with a
one-second timeout failed and the orchestrator restarted healthy workers. With
`GUNICORN_PROBE_BIND` set, the gunicorn master opens a second listening socket before
it forks the workers, and each worker answers it from a thread of its own. A probe
then waits for no API request, only for the interpreter to switch threads (a few
milliseconds however busy the worker is), and it still proves what it should: that a
worker process is alive with the application loaded and, for `/readyz`, that the
database, the broker and beat are.

Only the probe paths are served there (`/healthz`, `/readyz`, `/metrics`, answered by
`sabito_sync.ops.health.ProbeMiddleware` as on the API's port); anything else is 404.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def listening_socket(bind: str) -> socket.socket:
    """A listening TCP socket on `bind` ("host:port"), to be inherited by the workers."""
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"GUNICORN_PROBE_BIND={bind!r} is not host:port")
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        listener.close()
        raise SystemExit(f"GUNICORN_PROBE_BIND={bind!r}: cannot listen there: {exc}") from None
    listener.listen(64)
    return listener


def probes_only(application: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in PROBE_PATHS:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Only /healthz, /readyz and /metrics are served on the probe port.\n"]
        try:
            return application(environ, start_response)
        finally:
            # This thread's database connection is not kept between probes.
            from django.db import connections

            connections.close_all()

    return serve


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a probe every few seconds is not worth a log line; failures are logged by /readyz


class ProbeServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve_probes(listener: socket.socket, application: Callable[..., Iterable[bytes]]) -> threading.Thread:
    """Answer probes on the inherited `listener` from a daemon thread of this process."""
    host, port = listener.getsockname()[:2]
    server = ProbeServer((host, port), QuietHandler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.server_address = listener.getsockname()
    server.server_name, server.server_port = str(host), int(port)
    server.setup_environ()
    server.set_app(probes_only(application))
    thread = threading.Thread(target=server.serve_forever, name="probe-listener", daemon=True)
    thread.start()
    return thread
