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
# share of the requests waiting meanwhile: at 1,000 a dashboard's polling restarted
# each worker every few seconds. The jitter, half of it by default, keeps evenly
# loaded workers from restarting together: with 100 of 1,000 two workers restarted
# within that half second of each other, every client waiting (p95 400 ms, not 35).
max_requests = number("GUNICORN_MAX_REQUESTS", 5000, minimum=0)
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
