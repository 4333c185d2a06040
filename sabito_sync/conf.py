"""The Sabito sync settings, parsed in one place.

`settings.SABITO_*` hold what the operator wrote (strings from the environment, or
Python values in tests). `load_sabito_settings()` turns them into one typed, frozen
object and raises `SabitoSettingsError` naming every bad value; the system checks in
`checks.py` call it at start-up so a typo is reported before any sync runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

DEFAULT_SYNC_THROTTLE = "30/minute"
# Past a few thousand records a batch saves no more round trips worth having, and its
# transaction holds its locks and the run's uncommitted progress longer.
DEFAULT_WRITE_BATCH_RECORDS = 2000
# A page of 1,000 records whose every field is as long as its column allows, each
# character escaped, is under 10 MB: this leaves room for fields the sync ignores
# while a compression bomb or an endless body stops long before it costs memory.
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class SabitoSettingsError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class SabitoSettings:
    api_url: str
    api_key: str
    sync_enabled: bool
    sync_interval: str
    sync_on_startup: bool
    page_size: int
    # Records written per database round (whole pages: a batch closes once it holds this many).
    write_batch_records: int
    # The most bytes one Sabito answer may take, as sent and as decompressed.
    max_response_bytes: int
    connect_timeout: float
    read_timeout: float
    max_retries: int
    retry_backoff: float
    overlap_seconds: int
    stale_run_after_seconds: int
    heartbeat_seconds: float
    resume_within_seconds: int
    task_max_retries: int
    task_retry_delay_seconds: int
    # How long the sync endpoints wait for the runs they queued before answering 202.
    api_wait_seconds: float
    run_retention_days: int = 90
    # Mappings per task of a beat tick's fan-out (`tasks.fanout_chunks`).
    fanout_chunk_size: int = 50
    alert_after_failures: int = 1
    webhook_url: str = ""
    webhook_secret: str = ""


def parse_bool(name: str, value, problems: list[str]) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    problems.append(f"{name}={value!r} is not a boolean; use true or false.")
    return False


def parse_number(name: str, value, problems: list[str], *, kind=int, minimum=0, maximum=None):
    try:
        number = kind(str(value).strip())
    except ValueError:
        problems.append(f"{name}={value!r} is not a {'whole ' if kind is int else ''}number.")
        return kind(minimum)
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        problems.append(f"{name}={value!r} is out of range; it must be {bounds}.")
        return kind(minimum)
    return number


def parse_api_url(value, problems: list[str]) -> str:
    url = str(value or "").strip().rstrip("/")
    if not url:
        # No default on purpose: a default would sync against something that is not
        # the operator's Sabito and pass every check.
        problems.append(
            "SABITO_API_URL is not set: the sync has no Sabito API to talk to; set it to its base URL, e.g. https://api.sabito.example"
        )
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.append(f"SABITO_API_URL={value!r} is not an http(s) URL; expected e.g. https://api.sabito.example")
    return url


def parse_webhook_url(value, problems: list[str]) -> str:
    url = str(value or "").strip()
    parts = urlsplit(url)
    if url and (parts.scheme not in ("http", "https") or not parts.netloc):
        problems.append(
            f"SABITO_SYNC_WEBHOOK_URL={value!r} is not an http(s) URL; expected e.g. https://alerts.example/sabito"
        )
    return url


def cron_problem(expression: str) -> str | None:
    """Why a 5-field cron expression is invalid, or None when it is valid."""
    from celery.schedules import crontab

    fields = str(expression).split()
    if len(fields) != 5:
        return (
            f"SABITO_SYNC_INTERVAL={expression!r} must have 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 */6 * * *'."
        )
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except Exception as exc:  # celery raises ValueError or its own ParseException
        return f"SABITO_SYNC_INTERVAL={expression!r} is not a valid cron expression: {exc}"
    return None


def sync_throttle_rate() -> str | None:
    """The sync-trigger endpoints' per-user rate (`SABITO_SYNC_THROTTLE`, e.g.
    "30/minute"), or None for no limit (an empty value)."""
    rate = getattr(settings, "SABITO_SYNC_THROTTLE", DEFAULT_SYNC_THROTTLE)
    if rate is None:
        return None
    return str(rate).strip() or None


def load_sabito_settings() -> SabitoSettings:
    problems: list[str] = []
    interval = str(getattr(settings, "SABITO_SYNC_INTERVAL", "0 */6 * * *")).strip()
    if (problem := cron_problem(interval)) is not None:
        problems.append(problem)
    loaded = SabitoSettings(
        api_url=parse_api_url(getattr(settings, "SABITO_API_URL", ""), problems),
        api_key=str(getattr(settings, "SABITO_API_KEY", "")).strip(),
        sync_enabled=parse_bool("SABITO_SYNC_ENABLED", getattr(settings, "SABITO_SYNC_ENABLED", True), problems),
        sync_interval=interval,
        sync_on_startup=parse_bool(
            "SABITO_SYNC_ON_STARTUP", getattr(settings, "SABITO_SYNC_ON_STARTUP", True), problems
        ),
        page_size=parse_number(
            "SABITO_PAGE_SIZE", getattr(settings, "SABITO_PAGE_SIZE", 100), problems, minimum=1, maximum=1000
        ),
        max_response_bytes=parse_number(
            "SABITO_MAX_RESPONSE_BYTES",
            getattr(settings, "SABITO_MAX_RESPONSE_BYTES", DEFAULT_MAX_RESPONSE_BYTES),
            problems,
            minimum=64 * 1024,
            maximum=1024 * 1024 * 1024,
        ),
        write_batch_records=parse_number(
            "SABITO_WRITE_BATCH_RECORDS",
            getattr(settings, "SABITO_WRITE_BATCH_RECORDS", DEFAULT_WRITE_BATCH_RECORDS),
            problems,
            minimum=1,
            maximum=20_000,
        ),
        connect_timeout=parse_number(
            "SABITO_CONNECT_TIMEOUT", getattr(settings, "SABITO_CONNECT_TIMEOUT", 5), problems, kind=float, minimum=0.1
        ),
        read_timeout=parse_number(
            "SABITO_READ_TIMEOUT", getattr(settings, "SABITO_READ_TIMEOUT", 30), problems, kind=float, minimum=0.1
        ),
        max_retries=parse_number(
            "SABITO_MAX_RETRIES", getattr(settings, "SABITO_MAX_RETRIES", 4), problems, maximum=20
        ),
        retry_backoff=parse_number(
            "SABITO_RETRY_BACKOFF", getattr(settings, "SABITO_RETRY_BACKOFF", 1), problems, kind=float, maximum=60
        ),
        overlap_seconds=parse_number("SABITO_SYNC_OVERLAP", getattr(settings, "SABITO_SYNC_OVERLAP", 300), problems),
        stale_run_after_seconds=parse_number(
            "SABITO_STALE_RUN_AFTER", getattr(settings, "SABITO_STALE_RUN_AFTER", 60), problems, minimum=10
        ),
        heartbeat_seconds=parse_number(
            "SABITO_HEARTBEAT_SECONDS",
            getattr(settings, "SABITO_HEARTBEAT_SECONDS", 2),
            problems,
            kind=float,
            minimum=0.1,
            maximum=60,
        ),
        resume_within_seconds=parse_number(
            "SABITO_RESUME_WITHIN", getattr(settings, "SABITO_RESUME_WITHIN", 24 * 3600), problems
        ),
        task_max_retries=parse_number(
            "SABITO_TASK_MAX_RETRIES", getattr(settings, "SABITO_TASK_MAX_RETRIES", 3), problems, maximum=10
        ),
        task_retry_delay_seconds=parse_number(
            "SABITO_TASK_RETRY_DELAY", getattr(settings, "SABITO_TASK_RETRY_DELAY", 60), problems, maximum=3600
        ),
        fanout_chunk_size=parse_number(
            "SABITO_FANOUT_CHUNK_SIZE",
            getattr(settings, "SABITO_FANOUT_CHUNK_SIZE", 50),
            problems,
            minimum=1,
            maximum=1000,
        ),
        run_retention_days=parse_number(
            "SABITO_RUN_RETENTION_DAYS", getattr(settings, "SABITO_RUN_RETENTION_DAYS", 90), problems
        ),
        alert_after_failures=parse_number(
            "SABITO_SYNC_ALERT_AFTER_FAILURES",
            getattr(settings, "SABITO_SYNC_ALERT_AFTER_FAILURES", 1),
            problems,
            minimum=1,
        ),
        webhook_url=parse_webhook_url(getattr(settings, "SABITO_SYNC_WEBHOOK_URL", ""), problems),
        webhook_secret=str(getattr(settings, "SABITO_SYNC_WEBHOOK_SECRET", "")).strip(),
        api_wait_seconds=parse_number(
            "SABITO_SYNC_API_WAIT", getattr(settings, "SABITO_SYNC_API_WAIT", 20), problems, kind=float, maximum=300
        ),
    )
    if not problems and loaded.stale_run_after_seconds < 5 * loaded.heartbeat_seconds:
        # A few missed beats (a database blip, a long garbage collection) must not
        # make a live run look dead and get it taken over.
        problems.append(
            f"SABITO_STALE_RUN_AFTER={loaded.stale_run_after_seconds} must be at least 5 times "
            f"SABITO_HEARTBEAT_SECONDS={loaded.heartbeat_seconds:g}."
        )
    if problems:
        raise SabitoSettingsError(problems)
    return loaded
