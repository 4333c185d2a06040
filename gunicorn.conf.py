"""gunicorn's settings for the web server, from the environment with safe defaults.

Used by the Procfile, docker-compose.yml and the Dockerfile (`gunicorn nexpro.wsgi -c
gunicorn.conf.py --bind ...`); each of those names its own address. A bad value stops
gunicorn at start-up with the setting's name.
"""

import os


def number(name: str, default: int, *, minimum: int) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SystemExit(f"{name}={raw!r} must be at least {minimum}")
    return value


# Requests are short (syncs run in the workers, never in a request): a worker stuck
# this long is killed and replaced, and the admin's long pages still fit.
timeout = number("GUNICORN_TIMEOUT", 30, minimum=1)
graceful_timeout = number("GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=1)
workers = number("GUNICORN_WORKERS", 2, minimum=1)
threads = number("GUNICORN_THREADS", 1, minimum=1)
# Recycle each worker after this many requests: bounds the memory any slow leak can
# take. 0 never recycles. A new worker spends about half a second loading Django, its
# share of the requests waiting meanwhile, so a restart is a latency spike: sized for
# the rate a worker really sees. One worker answers at most 105-125 API requests a
# second (2 cores, 2 workers, bound by Django's and DRF's CPU): at 5,000 a saturated
# worker restarted every 40-50 s; at 100,000 (plus jitter) every 13-20 minutes at
# that rate, and every few hours at a busy dashboard's 10 a second. The jitter, half
# of it by default, keeps evenly loaded workers from restarting together: with 100
# of 1,000 two workers restarted within that half second of each other, every client
# waiting (p95 400 ms, not 35).
max_requests = number("GUNICORN_MAX_REQUESTS", 100_000, minimum=0)
max_requests_jitter = number("GUNICORN_MAX_REQUESTS_JITTER", max_requests // 2, minimum=0)
keepalive = number("GUNICORN_KEEPALIVE", 5, minimum=0)
accesslog = "-"
errorlog = "-"
# The proxies whose X-Forwarded-* headers gunicorn believes (a comma-separated list of
# addresses): none unless the deployment names its own, so a client's word never
# turns the answers' URLs into https. gunicorn's default would trust 127.0.0.1.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "").strip()
# No control socket: gunicornc is not used, and the default path is one per user,
# shared by every stack on the host.
control_socket_disable = True
# Probes on a port of their own, answered by a thread in every worker, so that they
# never wait behind API requests (see nexpro/probes.py): "host:port", or empty to
# answer them on the API's port only. The image sets 0.0.0.0:8081.
probe_bind = os.environ.get("GUNICORN_PROBE_BIND", "").strip()
_probe_listener = None


def on_starting(server):
    """In the master, before any worker is forked: the probe socket every worker shares."""
    global _probe_listener
    if probe_bind:
        from nexpro.probes import listening_socket

        _probe_listener = listening_socket(probe_bind)
        server.log.info("Probes answered on %s by every worker", probe_bind)


def post_worker_init(worker):
    """In each worker, its application loaded: answer the shared probe socket."""
    if _probe_listener is not None:
        from nexpro.probes import serve_probes

        serve_probes(_probe_listener, worker.wsgi)
